"""The pure merge logic of hook.admin.engines, the hooks.d templates, and Docker's version advice, on plain values."""

from __future__ import annotations

import json
import re
import tomllib
from pathlib import Path

import pytest

from hook.admin import engines
from hook.admin.engines import merge
from hook.admin.engines.base import DEFAULT_HOOKS_DIR, HOOK_FILES, INFO, OK, WARN, Engine
from hook.admin.engines.docker import Docker, drops_annotations, version_advice
from hook.entry import MAIN_SCRIPT, entry_argv
from hook.errors import EngineConfigError

SHIM = "/opt/dpdk-oci-hook/venv/bin/dpdk-oci-runtime"
PYTHON = "/opt/dpdk-oci-hook/venv/bin/python3"
TEMPLATES = Path(__file__).resolve().parents[2] / "templates" / "hooks.d"
DEBIAN_CONTAINERD = """version = 2

[plugins]
  [plugins."io.containerd.grpc.v1.cri"]
    [plugins."io.containerd.grpc.v1.cri".cni]
      bin_dir = "/usr/lib/cni"
      conf_dir = "/etc/cni/net.d"
  [plugins."io.containerd.internal.v1.opt"]
    path = "/var/lib/containerd/opt"
"""


# --- Docker daemon.json --------------------------------------------------------------------


def test_docker_merge_keeps_every_other_key_in_order() -> None:
    """Our runtime is added beside the existing ones; other keys and their order are kept."""
    original = json.dumps({"log-level": "warn", "runtimes": {"other": {"path": "/x"}}, "data-root": "/srv/docker"})
    merged = json.loads(merge.docker_merge(original, SHIM))
    assert list(merged) == ["log-level", "runtimes", "data-root"]
    assert merged["runtimes"] == {"other": {"path": "/x"}, "dpdk": {"path": SHIM}}
    assert merged["data-root"] == "/srv/docker"


def test_docker_merge_of_nothing_creates_only_our_runtime() -> None:
    """A missing or blank daemon.json becomes one with only our runtime."""
    for text in (None, "", "  \n"):
        assert json.loads(merge.docker_merge(text, SHIM)) == {"runtimes": {"dpdk": {"path": SHIM}}}


def test_docker_merge_is_idempotent_byte_for_byte() -> None:
    """Merging into an already registered file returns it unchanged, bytes included."""
    once = merge.docker_merge('{"debug": true}', SHIM)
    assert merge.docker_merge(once, SHIM) == once
    hand_written = json.dumps({"runtimes": {"dpdk": {"path": SHIM}}}, separators=(",", ":"))
    assert merge.docker_merge(hand_written, SHIM) == hand_written


def test_docker_merge_updates_our_runtime_at_a_new_path() -> None:
    """A registration of our wrapper at an older path is moved to the new one."""
    old = merge.docker_merge(None, "/old/venv/bin/dpdk-oci-runtime")
    assert json.loads(merge.docker_merge(old, SHIM))["runtimes"]["dpdk"] == {"path": SHIM}


@pytest.mark.parametrize("text", ['{"debug": true,}', "[1, 2]", '{"runtimes": []}', "not json"])
def test_docker_merge_refuses_what_it_cannot_parse(text: str) -> None:
    """Invalid JSON, a non-object, or a non-object "runtimes" is refused with a clear error."""
    with pytest.raises(EngineConfigError, match="nothing was changed"):
        merge.docker_merge(text, SHIM, "/etc/docker/daemon.json")


def test_docker_merge_refuses_someone_elses_dpdk_runtime() -> None:
    """A runtime already named dpdk that is not our wrapper is not overwritten."""
    with pytest.raises(EngineConfigError, match='already defines a runtime "dpdk"'):
        merge.docker_merge('{"runtimes": {"dpdk": {"path": "/usr/bin/other-runtime"}}}', SHIM)


def test_docker_unmerge_removes_exactly_our_key() -> None:
    """Unmerge drops runtimes.dpdk and nothing else; an emptied "runtimes" goes if we brought it."""
    merged = merge.docker_merge('{"debug": true, "runtimes": {"other": {"path": "/x"}}}', SHIM)
    assert json.loads(merge.docker_unmerge(merged, had_runtimes=True) or "") == {"debug": True, "runtimes": {"other": {"path": "/x"}}}
    merged = merge.docker_merge('{"debug": true}', SHIM)
    assert json.loads(merge.docker_unmerge(merged, had_runtimes=False) or "") == {"debug": True}
    assert merge.docker_unmerge(merge.docker_merge(None, SHIM), had_runtimes=False) is None


# --- containerd config.toml ----------------------------------------------------------------


def _runtime(text: str, plugin: str) -> dict[str, object]:
    data = tomllib.loads(text)
    runtime: dict[str, object] = data["plugins"][plugin]["containerd"]["runtimes"]["dpdk"]
    return runtime


def test_containerd_merge_appends_a_block_and_keeps_the_rest() -> None:
    """Debian's config.toml keeps every line; our runtime lands in the CRI plugin."""
    merged = merge.containerd_merge(DEBIAN_CONTAINERD, SHIM)
    assert merged.startswith(DEBIAN_CONTAINERD)
    runtime = _runtime(merged, "io.containerd.grpc.v1.cri")
    assert runtime == {"runtime_type": "io.containerd.runc.v2", "pod_annotations": ["dpdk-oci-hook/*"],
                       "container_annotations": ["dpdk-oci-hook/*"], "options": {"BinaryName": SHIM}}
    assert tomllib.loads(merged)["plugins"]["io.containerd.grpc.v1.cri"]["cni"]["bin_dir"] == "/usr/lib/cni"


@pytest.mark.parametrize(
    ("header", "plugin"),
    [("", "cri"), ("version = 1\n", "cri"), ("version = 2\n", "io.containerd.grpc.v1.cri"), ("version = 3\n", "io.containerd.cri.v1.runtime")],
)
def test_containerd_merge_names_the_cri_plugin_of_each_config_version(header: str, plugin: str) -> None:
    """Config versions 1, 2 and 3 name the CRI plugin differently."""
    merged = merge.containerd_merge(header + 'root = "/var/lib/containerd"\n', SHIM)
    assert _runtime(merged, plugin)["options"] == {"BinaryName": SHIM}


def test_containerd_merge_of_nothing_and_its_undo() -> None:
    """No config.toml: we write a version 2 file with our block; undo leaves no file."""
    merged = merge.containerd_merge(None, SHIM)
    assert merged.startswith("version = 2\n")
    assert merge.containerd_unmerge(merged) is None


def test_containerd_merge_is_idempotent_and_unmerge_restores_bytes() -> None:
    """Twice is once; unmerge gives back the original bytes (a missing final newline comes back added)."""
    for original in (DEBIAN_CONTAINERD, DEBIAN_CONTAINERD + "\n\n", "# only a comment\n"):
        merged = merge.containerd_merge(original, SHIM)
        assert merge.containerd_merge(merged, SHIM) == merged
        assert merge.containerd_unmerge(merged) == original
    no_newline = DEBIAN_CONTAINERD.rstrip("\n")
    assert merge.containerd_unmerge(merge.containerd_merge(no_newline, SHIM)) == no_newline + "\n"


def test_containerd_merge_moves_our_block_to_a_new_path_in_place() -> None:
    """A block with an older wrapper path is replaced where it is; text after it is kept."""
    merged = merge.containerd_merge(DEBIAN_CONTAINERD, "/old/bin/dpdk-oci-runtime") + "[debug]\n  level = \"info\"\n"
    again = merge.containerd_merge(merged, SHIM)
    assert again.count(merge.BLOCK_BEGIN) == 1
    assert _runtime(again, "io.containerd.grpc.v1.cri")["options"] == {"BinaryName": SHIM}
    assert tomllib.loads(again)["debug"] == {"level": "info"}


def test_containerd_merge_refuses_invalid_toml() -> None:
    """A config.toml that does not parse is refused, with the reason."""
    with pytest.raises(EngineConfigError, match="not valid TOML"):
        merge.containerd_merge("version = 2\n[plugins\n", SHIM, "/etc/containerd/config.toml")


def test_containerd_merge_refuses_an_existing_dpdk_runtime() -> None:
    """A CRI runtime named dpdk that is not in our block is not touched."""
    text = DEBIAN_CONTAINERD + '[plugins."io.containerd.grpc.v1.cri".containerd.runtimes.dpdk]\n  runtime_type = "x"\n'
    with pytest.raises(EngineConfigError, match='already defines a CRI runtime "dpdk"'):
        merge.containerd_merge(text, SHIM)


def test_containerd_merge_refuses_when_appending_would_break_the_file() -> None:
    """Runtimes given as an inline table cannot be extended by a table header: refused, with the lines to add."""
    text = 'version = 2\n[plugins."io.containerd.grpc.v1.cri".containerd]\n  runtimes = { runc = { runtime_type = "io.containerd.runc.v2" } }\n'
    with pytest.raises(EngineConfigError, match="add this yourself"):
        merge.containerd_merge(text, SHIM)


def test_containerd_unmerge_keeps_later_edits() -> None:
    """Lines added after install survive an undo; only our block goes."""
    merged = merge.containerd_merge(DEBIAN_CONTAINERD, SHIM) + "[debug]\n  level = \"debug\"\n"
    undone = merge.containerd_unmerge(merged)
    assert undone is not None and merge.BLOCK_BEGIN not in undone
    assert tomllib.loads(undone)["debug"] == {"level": "debug"}


def test_containerd_half_a_block_is_an_error() -> None:
    """A begin marker without its end is reported, never guessed at."""
    with pytest.raises(EngineConfigError, match="without"):
        merge.containerd_unmerge(DEBIAN_CONTAINERD + merge.BLOCK_BEGIN + "\n[x]\n")


# --- CRI-O ---------------------------------------------------------------------------------


def test_crio_default_reads_our_hooks_dir_so_no_dropin() -> None:
    """CRI-O's default hooks_dir already holds our directory: nothing to write."""
    assert merge.crio_hooks_dirs(None, []) == [DEFAULT_HOOKS_DIR]
    assert merge.crio_dropin(merge.crio_hooks_dirs(None, []), DEFAULT_HOOKS_DIR) is None


def test_crio_dropin_extends_a_changed_hooks_dir() -> None:
    """When the admin replaced hooks_dir, the drop-in keeps their directories and adds ours."""
    main = '[crio.runtime]\nhooks_dir = ["/etc/containers/oci/hooks.d"]\n'
    later = [("10-site.conf", '[crio.runtime]\nhooks_dir = ["/srv/hooks"]\n'), ("05-early.conf", "[crio.api]\n")]
    effective = merge.crio_hooks_dirs(main, later)
    assert effective == ["/srv/hooks"]
    dropin = merge.crio_dropin(effective, DEFAULT_HOOKS_DIR)
    assert dropin is not None
    assert tomllib.loads(dropin)["crio"]["runtime"]["hooks_dir"] == ["/srv/hooks", DEFAULT_HOOKS_DIR]


def test_crio_refuses_invalid_toml() -> None:
    with pytest.raises(EngineConfigError, match="not valid TOML"):
        merge.crio_hooks_dirs("[crio.runtime\n", [])


# --- hooks.d templates ---------------------------------------------------------------------


def _rendered() -> dict[str, dict[str, object]]:
    return {
        stage: json.loads(merge.render_hook((TEMPLATES / name).read_text(), PYTHON, "/etc/dpdk-oci-hook/config.hcl"))
        for stage, name in HOOK_FILES.items()
    }


def test_templates_render_to_valid_version_1_hooks() -> None:
    """Each template is a 1.0.0 hook for exactly one stage, run isolated by absolute path."""
    for stage, hook in _rendered().items():
        assert hook["version"] == "1.0.0"
        assert hook["stages"] == [stage]
        entry = hook["hook"]
        assert isinstance(entry, dict)
        assert entry["args"][-4:] == [PYTHON, "-I", MAIN_SCRIPT, stage]  # absolute: keeps the venv
        assert entry["args"] == entry_argv(PYTHON, stage) and entry["path"] == entry["args"][0]  # the client in front if installed
        assert entry["env"] == ["PATH=/usr/sbin:/usr/bin:/sbin:/bin", "DPDK_OCI_HOOK_CONFIG=/etc/dpdk-oci-hook/config.hcl"]
        assert isinstance(entry["timeout"], int) and 0 < entry["timeout"] <= 60


def test_templates_never_use_create_container_and_cover_setup_and_teardown() -> None:
    """createRuntime sets up, poststop releases; createContainer (CVE-2025-23266) never appears."""
    stages = {s for hook in _rendered().values() for s in hook["stages"]}  # type: ignore[attr-defined]
    assert stages == {"createRuntime", "poststop"}
    for path in TEMPLATES.glob("*.json"):
        assert "createContainer" not in path.read_text()


def test_template_annotation_regexes_are_anchored() -> None:
    """The loader does not anchor: our key regex matches our prefix only, at the start; any value."""
    for hook in _rendered().values():
        when = hook["when"]
        assert isinstance(when, dict) and set(when) == {"annotations"}
        [(key_re, value_re)] = when["annotations"].items()
        assert "^" in key_re and key_re.endswith("$") and value_re.endswith("$")
        for key in ("dpdk-oci-hook/cpus", "dpdk-oci-hook/vhost-user", "dpdk-oci-hook/a\nb", "dpdk-oci-hook/"):
            assert re.search(key_re, key), key
        for key in ("x-dpdk-oci-hook/cpus", "io.example/dpdk-oci-hook/cpus", "dpdk-oci-hook", "DPDK-OCI-HOOK/cpus"):
            assert not re.search(key_re, key), key
        for value in ("1", "", '[{"queues": 2}]', "two\nlines"):
            assert re.search(value_re, value), value


def test_render_refuses_relative_paths_and_keeps_json_valid() -> None:
    template = (TEMPLATES / HOOK_FILES["poststop"]).read_text()
    with pytest.raises(EngineConfigError, match="absolute"):
        merge.render_hook(template, "python3", "/etc/x.hcl")
    with pytest.raises(ValueError):
        merge.render_hook(template, '/opt/we"ird/python3', "/etc/x.hcl")


# --- the Engine interface ------------------------------------------------------------------


def test_one_engine_per_name_in_install_order() -> None:
    """--engines names, the registry and the output order are the same four engines."""
    assert engines.ENGINES == ("podman", "crio", "docker", "containerd")
    assert all(isinstance(engine, Engine) for engine in engines.ALL_ENGINES)
    assert [engines.BY_NAME[name].name for name in engines.ENGINES] == list(engines.ENGINES)


def test_crio_reads_compares_normalised_paths() -> None:
    assert merge.crio_reads(["/usr/share/containers/oci/hooks.d/"], DEFAULT_HOOKS_DIR)
    assert not merge.crio_reads(["/srv/hooks"], DEFAULT_HOOKS_DIR)


# --- Docker's version: annotations need >= 24 ------------------------------------------------


@pytest.mark.parametrize(
    ("version", "drops"),
    [((20, 10, 24), True), ((23, 0, 6), True), ((24, 0), False), ((24, 0, 0), False), ((26, 1, 5), False), (None, False)],
)
def test_docker_older_than_24_drops_annotations(version: tuple[int, ...] | None, drops: bool) -> None:
    assert drops_annotations(version) is drops


def test_old_docker_is_a_warning_that_names_a_newer_engine() -> None:
    """Debian 12's docker.io 20.10: the warning says annotations are dropped and where a newer Docker comes from."""
    advice = version_advice("/usr/sbin/dockerd", (20, 10, 24))
    assert advice.level == WARN
    assert "20.10.24" in advice.what and "drops --annotation" in advice.what
    assert "Debian 13's docker.io (26)" in advice.fix and "docker-ce" in advice.fix and "podman or ctr" in advice.fix


def test_new_docker_is_ok_and_says_how_to_run() -> None:
    advice = version_advice("/usr/bin/dockerd", (26, 1, 5))
    assert advice.level == OK and advice.what == "Docker 26.1.5: docker run --runtime dpdk --annotation dpdk-oci-hook/..."
    assert not advice.fix


def test_absent_docker_is_one_info_line_and_unknown_version_a_warning() -> None:
    """No dockerd: one line, not an error; a dockerd whose version cannot be read: check it."""
    [absent] = Docker().version_checks(None, None)
    assert absent.level == INFO and absent.what.startswith("Docker: not installed") and "\n" not in absent.what
    unknown = version_advice("/usr/bin/dockerd", None)
    assert unknown.level == WARN and ">= 24" in unknown.what and unknown.fix
