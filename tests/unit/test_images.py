"""Image templates: requirement labels, rendering, the shared build steps, the entrypoint."""

from __future__ import annotations

import argparse
import filecmp
import os
import re
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path
from typing import Any

import pytest

from hook.admin import images
from hook.admin.images import docker_build
from hook.errors import EngineError, ImageRequirementError, exit_code
from hook.model import PortRequest, Request
from hook.request import image_requirements

REPO = Path(__file__).resolve().parents[2]
TEMPLATES = REPO / "templates"
ENTRYPOINT = TEMPLATES / "common" / "dpdk-entrypoint"
TOOL = TEMPLATES / "common" / "dpdk-image-tool"
EAL_LINE = (
    "--lcores 0@3,1@3 --main-lcore 0 --file-prefix=dpk0123456789ab --huge-dir=/dev/hugepages -m 256 "
    "--single-file-segments --no-pci --vdev=net_virtio_user0,path=/run/dpdk/net0.sock,mac=02:00:00:00:00:01,queues=1,server=1\n"
)

LABELS = {
    "dpdk-oci-hook.dpdk-version": "22.11",
    "dpdk-oci-hook.min-ports": "1",
    "dpdk-oci-hook.min-cpus": "2",
    "dpdk-oci-hook.min-hugepages": "192Mi",
    "dpdk-oci-hook.min-queues": "2",
}


def request(ports: int = 1, cpus: int = 2, hugepages_mib: int = 256, queues: int = 2) -> Request:
    return Request(ports=tuple(PortRequest(queues=queues) for _ in range(ports)), cpus=cpus, hugepages_mib=hugepages_mib)


# --- requirements --------------------------------------------------------------------------


def test_image_requirements_reads_every_label() -> None:
    """The labels become counts and MiB; the DPDK version is kept as text."""
    assert image_requirements.image_requirements(LABELS) == {
        "dpdk-version": "22.11",
        "min-ports": 1,
        "min-cpus": 2,
        "min-hugepages-mib": 192,
        "min-queues": 2,
    }


def test_image_requirements_of_an_unlabelled_image_ask_nothing() -> None:
    """An image without our labels (or with None) requires nothing."""
    expected = {"dpdk-version": None, "min-ports": 0, "min-cpus": 0, "min-hugepages-mib": 0, "min-queues": 0}
    assert image_requirements.image_requirements({}) == expected
    assert image_requirements.image_requirements(None) == expected
    assert image_requirements.image_requirements({"maintainer": "x"}) == expected


def test_image_requirements_round_a_size_up_to_whole_mib() -> None:
    """A size that is not whole MiB asks for the next MiB (never less than the label says)."""
    assert image_requirements.image_requirements({"dpdk-oci-hook.min-hugepages": "1536Ki"})["min-hugepages-mib"] == 2
    assert image_requirements.image_requirements({"dpdk-oci-hook.min-hugepages": "1Gi"})["min-hugepages-mib"] == 1024


@pytest.mark.parametrize(
    ("label", "value"),
    [
        ("dpdk-oci-hook.min-cpus", "two"),
        ("dpdk-oci-hook.min-ports", "-1"),
        ("dpdk-oci-hook.min-queues", "1.5"),
        ("dpdk-oci-hook.min-ports", "9999999"),
        ("dpdk-oci-hook.min-hugepages", "64MB"),
        ("dpdk-oci-hook.min-hugepages", "lots"),
    ],
)
def test_a_malformed_label_fails_closed(label: str, value: str) -> None:
    """A label the hook cannot read refuses the container instead of being ignored."""
    with pytest.raises(ImageRequirementError) as err:
        image_requirements.image_requirements({label: value})
    assert err.value.fields["label"] == label
    assert value in str(err.value)


def test_check_requirements_passes_a_request_that_covers_the_labels() -> None:
    """Enough of everything: the requirements come back, nothing is raised."""
    assert image_requirements.check_requirements(LABELS, request())["min-hugepages-mib"] == 192
    assert image_requirements.check_requirements(LABELS, request(ports=3, cpus=4, hugepages_mib=192, queues=4))["min-cpus"] == 2


def test_check_requirements_with_no_labels_accepts_anything() -> None:
    """An image without requirement labels runs with any annotations."""
    image_requirements.check_requirements({}, Request(cpus=1))
    image_requirements.check_requirements(None, Request(hugepages_mib=2))


@pytest.mark.parametrize(
    ("req", "label", "required", "given"),
    [
        (request(ports=0), "dpdk-oci-hook.min-ports", 1, "0 vhost-user port(s)"),
        (request(cpus=1), "dpdk-oci-hook.min-cpus", 2, "cpus=1"),
        (request(cpus=0), "dpdk-oci-hook.min-cpus", 2, "cpus=0"),
        (request(hugepages_mib=128), "dpdk-oci-hook.min-hugepages", "192Mi", "hugepages=128Mi"),
        (request(ports=0, hugepages_mib=0), "dpdk-oci-hook.min-ports", 1, "0 vhost-user port(s)"),
        (request(queues=1), "dpdk-oci-hook.min-queues", 2, "queues=1 on port 0 (net0)"),
    ],
)
def test_check_requirements_names_the_first_unmet_label(req: Request, label: str, required: Any, given: str) -> None:
    """The error names the label, what it requires and what the annotations give."""
    with pytest.raises(ImageRequirementError) as err:
        image_requirements.check_requirements(LABELS, req)
    assert err.value.fields == {"label": label, "required": required, "given": given}
    assert str(err.value) == f"image requires {label}={required}, but the annotations give {given}"
    assert exit_code(err.value) == 11


def test_check_requirements_says_no_hugepages_when_none_are_asked() -> None:
    """A request without hugepage memory reads as 'no hugepages'."""
    with pytest.raises(ImageRequirementError, match="annotations give no hugepages"):
        image_requirements.check_requirements({"dpdk-oci-hook.min-hugepages": "64Mi"}, Request(cpus=1))


def test_check_requirements_checks_the_queues_of_every_port() -> None:
    """The second port's queue count is checked too."""
    req = Request(ports=(PortRequest(queues=2), PortRequest(queues=1)), cpus=2, hugepages_mib=256)
    with pytest.raises(ImageRequirementError, match=r"queues=1 on port 1 \(net1\)"):
        image_requirements.check_requirements(LABELS, req)


# --- templates -----------------------------------------------------------------------------


def test_list_templates_finds_the_four_image_templates() -> None:
    """Directories of templates/ without a Dockerfile (common, hooks.d) are not templates."""
    found = {t.name: t for t in images.list_templates(TEMPLATES)}
    assert sorted(found) == ["custom", "l2fwd", "l3fwd", "testpmd"]
    for tpl in found.values():
        assert tpl.description and not tpl.description.startswith(tpl.name)
        assert tpl.defaults["BASE_IMAGE"] == "debian:bookworm-slim"
        assert tpl.defaults["DPDK_VERSION"] == "22.11"
    assert found["l3fwd"].requirements()["min-queues"] == 2
    assert found["l3fwd"].requirements()["min-hugepages-mib"] == 256
    assert found["testpmd"].requirements() == {
        "dpdk-version": "22.11", "min-ports": 1, "min-cpus": 1, "min-hugepages-mib": 64, "min-queues": 1,
    }


def test_unknown_template_is_an_error_naming_the_known_ones() -> None:
    with pytest.raises(EngineError, match="unknown template 'nope' .*testpmd"):
        images.get_template("nope", TEMPLATES)


def _stage_prefix(text: str, start: str, stop: str) -> list[str]:
    lines = [line for line in text.splitlines() if line and not line.startswith("#")]
    first = next(i for i, line in enumerate(lines) if line.startswith(start))
    last = next(i for i in range(first, len(lines)) if lines[i].startswith(stop))
    return lines[first : last + 1]


def test_templates_share_their_builder_and_runtime_layers() -> None:
    """The heavy steps are the same bytes in every template, so the build cache shares them."""
    texts = {t.name: (t.path / "Dockerfile").read_text() for t in images.list_templates(TEMPLATES)}
    builders, runtimes = {}, {}
    for name, text in texts.items():
        builders[name] = _stage_prefix(text, "FROM ${BASE_IMAGE} AS builder", "RUN dpdk-image-tool setup-builder")
        runtimes[name] = _stage_prefix(text.split(" AS builder", 1)[1], "FROM ${BASE_IMAGE}", "COPY dpdk-image-tool dpdk-entrypoint")
    assert len({tuple(v) for v in builders.values()}) == 1, builders
    assert len({tuple(v) for v in runtimes.values()}) == 1, runtimes


@pytest.mark.parametrize("name", ["custom", "l2fwd", "l3fwd", "testpmd"])
def test_every_template_runs_non_root_through_the_entrypoint_and_declares_its_needs(name: str) -> None:
    """Final stage: numeric non-root user, dpdk-entrypoint, setup-runtime, all requirement labels."""
    text = (TEMPLATES / name / "Dockerfile").read_text()
    final = text.rsplit("\nFROM ", 1)[1]
    assert f"\nUSER {images.APP_UID_GID}\n" in final
    assert re.search(r'^ENTRYPOINT \["/usr/local/bin/dpdk-entrypoint", "/', final, re.MULTILINE)
    assert "RUN dpdk-image-tool setup-runtime" in final
    for label in ("dpdk-version", "min-ports", "min-cpus", "min-hugepages", "min-queues"):
        assert f"dpdk-oci-hook.{label}=" in final
    assert "apt-get install" not in text, "package installs belong in dpdk-image-tool"


def test_dockerfile_args_reads_first_defaults_only() -> None:
    text = "ARG A=1\nARG B\nFROM x\nARG A=2\n  ARG C=three  \nRUN echo ARG D=4\n"
    assert images.dockerfile_args(text) == {"A": "1", "C": "three"}


def test_set_arg_defaults_rewrites_only_named_defaults() -> None:
    """Bare ARG lines (stage re-declarations) and other ARGs are untouched."""
    text = "ARG BASE_IMAGE=debian:bookworm-slim\nARG KEEP=1\nFROM ${BASE_IMAGE}\nARG BASE_IMAGE\n"
    out = images.set_arg_defaults(text, {"BASE_IMAGE": "debian:trixie-slim"})
    assert out == "ARG BASE_IMAGE=debian:trixie-slim\nARG KEEP=1\nFROM ${BASE_IMAGE}\nARG BASE_IMAGE\n"


def test_set_arg_defaults_refuses_an_arg_without_default_line() -> None:
    with pytest.raises(EngineError, match="no 'ARG NAME=default' line for MISSING"):
        images.set_arg_defaults("ARG A=1\nARG MISSING\n", {"A": "2", "MISSING": "x"})


@pytest.mark.parametrize(
    ("base", "version"),
    [
        ("debian:bookworm-slim", "22.11"),
        ("debian:bookworm", "22.11"),
        ("localhost/debian:trixie-slim", "24.11"),
        ("ubuntu:24.04", None),
        ("bookwormish:1", None),
    ],
)
def test_dpdk_version_for_base_images(base: str, version: str | None) -> None:
    assert images.dpdk_version_for(base) == version


def test_render_testpmd_for_trixie(tmp_path: Path) -> None:
    """A trixie base selects DPDK 24.11; the context has the shared files, executable."""
    ctx = images.render("testpmd", base_image="debian:trixie-slim", context=tmp_path / "ctx", root=TEMPLATES)
    dockerfile = (ctx / "Dockerfile").read_text()
    assert dockerfile.startswith("# Generated by dpdk-oci-hook image from templates/testpmd/Dockerfile")
    assert images.dockerfile_args(dockerfile)["BASE_IMAGE"] == "debian:trixie-slim"
    assert images.dockerfile_args(dockerfile)["DPDK_VERSION"] == "24.11"
    for name in images.COMMON_FILES:
        assert os.access(ctx / name, os.X_OK)
        assert filecmp.cmp(ctx / name, TEMPLATES / "common" / name, shallow=False)
    assert (ctx / images.CONTEXT_MARKER).is_file()


def test_render_explicit_dpdk_and_requirements(tmp_path: Path) -> None:
    ctx = images.render(
        "l3fwd", dpdk_version="22.11", context=tmp_path / "c", requirements={"min-hugepages": "384Mi", "min-queues": 4}, root=TEMPLATES
    )
    args = images.dockerfile_args((ctx / "Dockerfile").read_text())
    assert (args["MIN_HUGEPAGES"], args["MIN_QUEUES"], args["MIN_PORTS"]) == ("384Mi", "4", "1")


def test_render_twice_into_the_same_context_is_allowed(tmp_path: Path) -> None:
    """A context made by us is rewritten; the result is the same."""
    first = images.render("l2fwd", context=tmp_path / "c", root=TEMPLATES)
    before = (first / "Dockerfile").read_text()
    images.render("l2fwd", context=tmp_path / "c", root=TEMPLATES)
    assert (first / "Dockerfile").read_text() == before


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"template": "testpmd", "base_image": "debian:bookworm slim"}, "base image"),
        ({"template": "testpmd", "dpdk_version": "22.11; rm -rf /"}, "DPDK version"),
        ({"template": "testpmd", "base_image": "ubuntu:24.04", "dpdk_version": None}, None),
        ({"template": "custom"}, "needs the app's source directory"),
        ({"template": "testpmd", "requirements": {"min-cpus": "two"}}, "not a whole number"),
        ({"template": "testpmd", "requirements": {"min-hugepages": "64MB"}}, "min-hugepages"),
        ({"template": "testpmd", "requirements": {"max-cpus": 1}}, "unknown requirement"),
    ],
)
def test_render_rejects_bad_values(tmp_path: Path, kwargs: dict[str, Any], message: str | None) -> None:
    """Values written into a Dockerfile are checked first; an unknown release falls back to the template's DPDK."""
    if message is None:
        ctx = images.render(context=tmp_path / "c", root=TEMPLATES, **kwargs)
        assert images.dockerfile_args((ctx / "Dockerfile").read_text())["DPDK_VERSION"] == "22.11"
        return
    with pytest.raises(EngineError, match=message):
        images.render(context=tmp_path / "c", root=TEMPLATES, **kwargs)


def test_render_refuses_a_foreign_non_empty_directory(tmp_path: Path) -> None:
    (tmp_path / "mine.txt").write_text("precious")
    with pytest.raises(EngineError, match="not empty and was not made by"):
        images.render("testpmd", context=tmp_path, root=TEMPLATES)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["mine.txt"]


def test_render_refuses_app_for_non_custom_templates(tmp_path: Path) -> None:
    app = tmp_path / "app"
    app.mkdir()
    (app / "Makefile").write_text("all:\n")
    with pytest.raises(EngineError, match="--app is for template custom"):
        images.render("l2fwd", context=tmp_path / "c", app_dir=app, root=TEMPLATES)


def test_render_custom_copies_the_app_and_names_it_after_its_directory(tmp_path: Path) -> None:
    """The app's sources land at the context's top (COPY . /usr/src/dpdk); build dirs are left out."""
    app = tmp_path / "my-fwd"
    (app / "src").mkdir(parents=True)
    (app / "meson.build").write_text("project('my-fwd', 'c')\n")
    (app / "src" / "main.c").write_text("int main(void) { return 0; }\n")
    (app / "build").mkdir()
    (app / "build" / "junk").write_text("x")
    (app / ".dockerignore").write_text("secret\n")
    ctx = images.render("custom", context=tmp_path / "ctx", app_dir=app, root=TEMPLATES)
    assert (ctx / "src" / "main.c").is_file() and (ctx / "meson.build").is_file()
    assert not (ctx / "build").exists()
    assert (ctx / ".dockerignore").read_text() == "secret\n", "the app's own ignore rules are kept"
    assert images.dockerfile_args((ctx / "Dockerfile").read_text())["APP"] == "my-fwd"
    with pytest.raises(EngineError, match="app name"):
        images.render("custom", context=tmp_path / "ctx2", app_dir=app, app_name="bad name", root=TEMPLATES)


def test_render_custom_needs_a_build_system(tmp_path: Path) -> None:
    app = tmp_path / "app"
    app.mkdir()
    (app / "main.c").write_text("")
    with pytest.raises(EngineError, match="neither meson.build nor Makefile"):
        images.render("custom", context=tmp_path / "c", app_dir=app, root=TEMPLATES)


# what is rendered for each provided image: images/ holds only the sample app's sources
PROVIDED_IMAGES: dict[str, tuple[str, str | None]] = {
    "testpmd": ("testpmd", None),
    "l2fwd": ("l2fwd", None),
    "l3fwd": ("l3fwd", None),
    "sample-app": ("custom", "images/sample-app"),
}


def test_images_holds_no_copy_of_a_template_file() -> None:
    """Build contexts are rendered, never checked in: no file under images/ repeats one of templates/."""
    template_files = [p for p in TEMPLATES.rglob("*") if p.is_file()]
    for path in (REPO / "images").rglob("*"):
        if path.is_file():
            copies = [t for t in template_files if filecmp.cmp(path, t, shallow=False)]
            assert not copies, f"{path.relative_to(REPO)} is a copy of {copies[0].relative_to(REPO)}"
        assert path.name not in ("Dockerfile", images.CONTEXT_MARKER), f"{path.relative_to(REPO)} is a rendered file"


def test_provided_images_cover_the_templates_and_the_sample_app() -> None:
    assert sorted({template for template, _ in PROVIDED_IMAGES.values()}) == sorted(t.name for t in images.list_templates(TEMPLATES))
    assert sorted(p.name for p in (REPO / "images").iterdir()) == ["sample-app"]


@pytest.mark.parametrize("name", list(PROVIDED_IMAGES))
def test_every_provided_image_renders_with_the_cli(name: str, tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    """'image render TEMPLATE [--app DIR] --output DIR' writes a context a bare 'docker build' takes."""
    template, app = PROVIDED_IMAGES[name]
    out = tmp_path / name
    argv = ["image", "render", template, "--output", str(out)] + (["--app", str(REPO / app)] if app else [])
    args = parse(*argv)
    assert args.func(args) == 0
    assert f"rendered {template} into {out}" in capsys.readouterr().out
    dockerfile = (out / "Dockerfile").read_text()
    assert dockerfile.startswith(f"# Generated by dpdk-oci-hook image from templates/{template}/Dockerfile")
    assert set(images.get_template(template, TEMPLATES).defaults) <= set(images.dockerfile_args(dockerfile)), "an ARG default was lost"
    assert images.dockerfile_args(dockerfile)["DPDK_VERSION"] == "22.11"
    for common in images.COMMON_FILES:
        assert os.access(out / common, os.X_OK)
        assert filecmp.cmp(out / common, TEMPLATES / "common" / common, shallow=False)
    for entry in (TEMPLATES / template).iterdir():
        assert (out / entry.name).is_file(), f"{entry.name} of templates/{template} is missing"
    if app:
        assert images.dockerfile_args(dockerfile)["APP"] == "sample-app"
        for source in (REPO / app).iterdir():
            assert filecmp.cmp(out / source.name, source, shallow=False)
    # every file a COPY line names is in the context
    for line in dockerfile.splitlines():
        if line.startswith("COPY ") and "--from=" not in line:
            for source in line.split()[1:-1]:
                assert source == "." or (out / source).exists(), f"{line!r}: {source} is not in the context"


def test_render_needs_an_output_directory() -> None:
    with pytest.raises(SystemExit):
        parse("image", "render", "testpmd")


def test_render_refuses_a_context_inside_the_apps_sources(tmp_path: Path) -> None:
    """Rendering into (or below) the app's directory would mix generated files into hand-written ones."""
    app = tmp_path / "app"
    app.mkdir()
    (app / "meson.build").write_text("project('app', 'c')\n")
    for context in (app, app / "ctx"):
        with pytest.raises(EngineError, match="inside the app's directory"):
            images.render("custom", context=context, app_dir=app, root=TEMPLATES)
    assert sorted(p.name for p in app.iterdir()) == ["meson.build"]


# --- the shared shell steps ----------------------------------------------------------------


def run_entrypoint(tmp_path: Path, *args: str, eal: str | None = EAL_LINE, env: dict[str, str] | None = None) -> subprocess.CompletedProcess[str]:
    eal_file = tmp_path / "eal.args"
    if eal is not None:
        eal_file.write_text(eal)
    full_env = {"PATH": "/usr/bin:/bin", "DPDK_EAL_ARGS_FILE": str(eal_file), **(env or {})}
    return subprocess.run(["sh", str(ENTRYPOINT), *args], capture_output=True, text=True, env=full_env, timeout=30, check=False)


def test_entrypoint_puts_the_hooks_eal_args_before_the_apps(tmp_path: Path) -> None:
    """APP <eal.args> -- ARGS, each argument intact, nothing glob-expanded."""
    (tmp_path / "x1").write_text("")
    proc = run_entrypoint(tmp_path, "/usr/bin/dpdk-testpmd", "--dry-run", "--forward-mode=io", "a b", "*", env={"HOME": str(tmp_path)})
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout.splitlines() == ["/usr/bin/dpdk-testpmd", *EAL_LINE.split(), "--", "--forward-mode=io", "a b", "*"]


def test_entrypoint_takes_extra_eal_args_before_a_double_dash(tmp_path: Path) -> None:
    """EAL-ARGS -- ARGS: the user's EAL arguments follow the hook's; DPDK_EAL_EXTRA too."""
    proc = run_entrypoint(tmp_path, "app", "--dry-run", "--log-level=8", "--", "-p", "0x1", env={"DPDK_EAL_EXTRA": "--iova-mode=va  -v"})
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout.splitlines() == ["app", *EAL_LINE.split(), "--iova-mode=va", "-v", "--log-level=8", "--", "-p", "0x1"]


def test_entrypoint_without_app_args_still_ends_eal_args(tmp_path: Path) -> None:
    proc = run_entrypoint(tmp_path, "app", "--dry-run")
    assert proc.stdout.splitlines() == ["app", *EAL_LINE.split(), "--"]


def test_entrypoint_execs_the_app(tmp_path: Path) -> None:
    """Without --dry-run the app itself runs with the arguments."""
    proc = run_entrypoint(tmp_path, "/bin/echo", "-p", "0x1")
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout == " ".join(["/bin/echo", *EAL_LINE.split(), "--", "-p", "0x1"][1:]) + "\n"


@pytest.mark.parametrize("eal", [None, "", "  \n"])
def test_entrypoint_without_the_hook_says_what_to_do(tmp_path: Path, eal: str | None) -> None:
    """Missing or empty eal.args: exit 78 (EX_CONFIG) and a message naming the annotations."""
    proc = run_entrypoint(tmp_path, "app", "-p", "0x1", eal=eal)
    assert proc.returncode == 78
    assert "dpdk-oci-hook" in proc.stderr and proc.stdout == ""
    if eal is None:
        assert "run this container with the dpdk-oci-hook annotations" in proc.stderr


def test_entrypoint_eal_help_and_version_need_no_hook(tmp_path: Path) -> None:
    """--eal-help runs APP -h; --version names the app, both without eal.args."""
    proc = run_entrypoint(tmp_path, "/bin/echo", "--eal-help", eal=None)
    assert (proc.returncode, proc.stdout) == (0, "-h\n")
    proc = run_entrypoint(tmp_path, "/usr/bin/dpdk-l2fwd", "--version", eal=None)
    assert proc.returncode == 0 and proc.stdout.startswith("app: /usr/bin/dpdk-l2fwd")


def test_entrypoint_needs_an_app(tmp_path: Path) -> None:
    proc = run_entrypoint(tmp_path)
    assert proc.returncode == 64 and "usage" in proc.stderr


@pytest.mark.skipif(os.geteuid() != 0 or not shutil.which("setpriv"), reason="needs root and setpriv to run as another user")
def test_entrypoint_gives_a_non_root_eal_the_hooks_directory(tmp_path: Path) -> None:
    """Non-root: XDG_RUNTIME_DIR defaults to /run/dpdk (writable even on a read-only rootfs)."""
    top = Path(tempfile.mkdtemp(prefix="entrypoint-"))  # pytest's tmp_path is not readable by others
    try:
        top.chmod(0o755)
        (top / "eal.args").write_text("--no-pci\n")
        (top / "eal.args").chmod(0o644)
        app = top / "app"
        app.write_text('#!/bin/sh\necho "$XDG_RUNTIME_DIR $*"\n')
        app.chmod(0o755)
        env = {"PATH": "/usr/bin:/bin", "DPDK_EAL_ARGS_FILE": str(top / "eal.args")}
        argv = ["setpriv", "--reuid=65534", "--regid=65534", "--clear-groups", "sh", str(ENTRYPOINT), str(app), "-x"]
        proc = subprocess.run(argv, capture_output=True, text=True, env=env, timeout=30, check=False)
    finally:
        shutil.rmtree(top, ignore_errors=True)
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout.strip() == "/run/dpdk --no-pci -- -x"


PATCH_TARGET = """\
	RTE_ETH_FOREACH_DEV(portid) {
		struct rte_eth_conf local_port_conf = port_conf;
		ret = rte_eth_dev_info_get(portid, &dev_info);
		ret = rte_eth_dev_configure(portid, nb_rx_queue,
					(uint16_t)n_tx_queue, &local_port_conf);
	}
			rxq_conf = dev_info.default_rxconf;
			rxq_conf.offloads = port_conf.rxmode.offloads;
"""


def test_l3fwd_virtio_patch_applies_once(tmp_path: Path) -> None:
    """Both edits land exactly once; running it again changes nothing."""
    main_c = tmp_path / "main.c"
    main_c.write_text(PATCH_TARGET)
    subprocess.run(["sh", str(TOOL), "patch-l3fwd-virtio", str(main_c)], check=True, timeout=30)
    patched = main_c.read_text()
    assert "\t\tlocal_port_conf.rxmode.offloads &= dev_info.rx_offload_capa;\n" in patched
    assert "local_port_conf.rxmode.mq_mode = RTE_ETH_MQ_RX_NONE;" in patched
    assert patched.index("rx_offload_capa;") < patched.index("ret = rte_eth_dev_configure")
    assert "rxq_conf.offloads = port_conf.rxmode.offloads & dev_info.rx_offload_capa;" in patched
    subprocess.run(["sh", str(TOOL), "patch-l3fwd-virtio", str(main_c)], check=True, timeout=30)
    assert main_c.read_text() == patched


def test_l3fwd_virtio_patch_fails_loudly_on_unknown_sources(tmp_path: Path) -> None:
    main_c = tmp_path / "main.c"
    main_c.write_text("int main(void) { return 0; }\n")
    proc = subprocess.run(["sh", str(TOOL), "patch-l3fwd-virtio", str(main_c)], capture_output=True, text=True, timeout=30, check=False)
    assert proc.returncode != 0 and "not found" in proc.stderr


@pytest.mark.parametrize("script", [ENTRYPOINT, TOOL])
def test_shell_scripts_parse_and_are_executable(script: Path) -> None:
    assert os.access(script, os.X_OK)
    subprocess.run(["sh", "-n", str(script)], check=True, timeout=30)


def test_image_tool_without_a_command_prints_its_usage() -> None:
    proc = subprocess.run(["sh", str(TOOL)], capture_output=True, text=True, timeout=30, check=False)
    assert proc.returncode == 2
    assert "setup-builder DPDK_VERSION" in proc.stderr and "set -eu" not in proc.stderr


# --- building (without an engine) and the command line ---------------------------------------


class FakeApi:
    def __init__(self, chunks: list[dict[str, Any]]) -> None:
        self.chunks = chunks
        self.kwargs: dict[str, Any] = {}

    def build(self, **kwargs: Any) -> Any:
        self.kwargs = kwargs
        return iter(self.chunks)


class FakeClient:
    def __init__(self, chunks: list[dict[str, Any]]) -> None:
        self.api = FakeApi(chunks)


def test_a_failed_build_names_the_step_and_shows_its_last_lines(tmp_path: Path) -> None:
    """The engine's error, the failing step and its output (colour codes removed) are in the message."""
    chunks: list[dict[str, Any]] = [
        {"stream": "Step 1/3 : FROM debian:bookworm-slim\n"},
        {"stream": " ---> abc\n"},
        {"stream": "Step 2/3 : RUN dpdk-image-tool setup-builder 22.11\n"},
        {"stream": "\x1b[91mdpdk-image-tool: error: this base image provides DPDK 24.11.3\n\x1b[0m"},
        {"error": "The command '/bin/sh -c dpdk-image-tool setup-builder 22.11' returned a non-zero code: 1",
         "errorDetail": {"code": 1, "message": "ignored"}},
        {"stream": "never read\n"},
    ]
    seen: list[str] = []
    client = FakeClient(chunks)
    with pytest.raises(EngineError) as err:
        docker_build._stream_build(client, tmp_path, "t:1", "host", False, seen.append)
    text = str(err.value)
    assert text.startswith("docker: building t:1 failed at Step 2/3 : RUN dpdk-image-tool setup-builder 22.11: exit code 1")
    assert "    dpdk-image-tool: error: this base image provides DPDK 24.11.3" in text
    assert "\x1b" not in text and "never read" not in seen
    assert client.api.kwargs["network_mode"] == "host" and client.api.kwargs["pull"] is False


def test_a_successful_build_streams_progress_and_returns_the_image_id(tmp_path: Path) -> None:
    chunks: list[dict[str, Any]] = [
        {"stream": "Step 1/1 : FROM x\n"},
        {"status": "Pulling"},
        {"aux": {"ID": "sha256:1234"}},
        {"stream": "Successfully built 1234\n"},
    ]
    seen: list[str] = []
    image_id, steps = docker_build._stream_build(FakeClient(chunks), tmp_path, "t:1", None, False, seen.append)
    assert (image_id, steps) == ("sha256:1234", ["Step 1/1 : FROM x"])
    assert seen == ["Step 1/1 : FROM x", "Pulling", "Successfully built 1234"]


def test_no_engine_is_a_clear_engine_error(tmp_path: Path) -> None:
    with pytest.raises(EngineError) as err:
        images.connect(f"unix://{tmp_path}/no-such.sock", timeout=5)
    assert err.value.fields["engine"] == "docker"
    assert "no engine reachable" in str(err.value) and exit_code(err.value) == 12


def test_build_without_the_docker_sdk_says_how_to_install_it(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    """The SDK is the optional [images] extra: without it a build fails before anything is rendered."""
    monkeypatch.setitem(sys.modules, "docker", None)  # "import docker" now raises ImportError
    monkeypatch.setitem(sys.modules, "docker.errors", None)
    with pytest.raises(EngineError) as err:
        images.build("testpmd", context=tmp_path / "ctx", progress=lambda line: None)
    text = str(err.value)
    assert text.startswith("docker: building images needs the Docker SDK for Python, which is not installed")
    assert "images extra" in text and "install 'docker>=7'" in text
    assert exit_code(err.value) == 12
    assert not (tmp_path / "ctx").exists()


def test_list_and_render_need_no_docker_sdk(tmp_path: Path) -> None:
    """A fresh interpreter without the SDK: 'image list' and 'image render' work, and never import docker."""
    code = (
        "import sys; sys.modules['docker'] = None\n"
        "from hook.admin.cli import main\n"
        f"assert main(['image', 'list']) == 0\n"
        f"assert main(['image', 'render', 'l2fwd', '--output', {str(tmp_path / 'ctx')!r}]) == 0\n"
    )
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, cwd=REPO, timeout=60, check=False)
    assert proc.returncode == 0, proc.stderr
    assert (tmp_path / "ctx" / "Dockerfile").is_file()


def parse(*argv: str) -> argparse.Namespace:
    parser = argparse.ArgumentParser()
    sub = parser.add_subparsers(dest="command")
    images.add_image_parser(sub)
    return parser.parse_args(list(argv))


def test_cli_render_only_writes_a_context(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    """'image build custom --app DIR --context OUT --render-only' needs no engine."""
    args = parse("image", "build", "custom", "--app", str(REPO / "images" / "sample-app"), "--context", str(tmp_path / "c"),
                 "--render-only", "--min-hugepages", "128Mi")
    assert args.func(args) == 0
    rendered = images.dockerfile_args((tmp_path / "c" / "Dockerfile").read_text())
    assert (rendered["APP"], rendered["MIN_HUGEPAGES"]) == ("sample-app", "128Mi")
    assert (tmp_path / "c" / "main.c").is_file()
    assert "rendered custom into" in capsys.readouterr().out


def test_cli_render_only_needs_a_context() -> None:
    args = parse("image", "build", "testpmd", "--render-only")
    with pytest.raises(EngineError, match="--render-only needs --context"):
        args.func(args)


def test_cli_image_list(capsys: pytest.CaptureFixture[str]) -> None:
    args = parse("image", "list")
    assert args.func(args) == 0
    out = capsys.readouterr().out
    for name in ("testpmd", "l2fwd", "l3fwd", "custom"):
        assert re.search(rf"^{name}\s", out, re.MULTILINE)
    assert "queues>=2" in out and "hugepages>=256Mi" in out
    args = parse("image", "list", "--json")
    args.func(args)
    assert '"min-hugepages-mib": 256' in capsys.readouterr().out
