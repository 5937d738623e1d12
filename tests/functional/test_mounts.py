"""hook.host.mounts against real runc containers: real mounts, hostile rootfs, rollback.

Every container runs under a private ``runc --root`` in a temp workspace; the prestart hook
is a small script (see runc_util) that calls ``apply_mounts`` and records the container's
mountinfo as the hook left it.  Needs root and runc; about 0.2 s per container.
"""

from __future__ import annotations

import os
import socket
import threading
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

import hook.host.mounts
from hook.errors import MountError
from hook.host.mounts import apply_mounts, remove_mounts
from hook.model import Mount
from tests.helpers.runc_util import Bundle, Workspace, host_mounts, hugepages, mounts_of, processes_in_mnt_ns, require_runc, snapshot, under

HUGETLBFS_64M = "pagesize=2M,size=64M,min_size=64M,mode=0700,uid=0,gid=0"


@pytest.fixture
def ws() -> Iterator[Workspace]:
    require_runc()
    workspace = Workspace()
    try:
        yield workspace
    finally:
        leaked = workspace.close()
    assert not leaked, f"mounts leaked into the host's namespace: {leaked}"


def wait_for(check: Callable[[], bool], seconds: float = 5.0) -> bool:
    deadline = time.monotonic() + seconds
    while not check():
        if time.monotonic() > deadline:
            return False
        time.sleep(0.05)
    return True


def children() -> set[int]:
    """Pids whose parent is this process (zombies included)."""
    found = set()
    for entry in os.listdir("/proc"):
        try:
            with open(f"/proc/{entry}/stat") as f:
                ppid = int(f.read().rpartition(")")[2].split()[1])
        except (OSError, ValueError, IndexError):
            continue
        if ppid == os.getpid():
            found.add(int(entry))
    return found


def host_source_dir(ws: Workspace, text: str = "hello from the host\n") -> Path:
    src = ws.path / "host-run-dpdk"
    src.mkdir()
    (src / "hello").write_text(text)
    return src


def hook_mountpoints(bundle: Bundle) -> list[str]:
    """Mount points in the container's namespace right after the hook ran (host paths)."""
    return [mp for mp, _ in mounts_of(bundle.hook_result()["mountinfo"])]


def test_hugetlbfs_and_directory_bind(ws: Workspace) -> None:
    """A bound host directory and a private size-capped hugetlbfs work inside the container and leave nothing behind."""
    hugetlbfs_before = {mp for mp, fs in host_mounts() if fs == "hugetlbfs"}
    pages_before = hugepages()
    bundle = ws.bundle()
    bundle.set_hook([Mount("bind", "/run/dpdk", str(host_source_dir(ws))), Mount("hugetlbfs", "/dev/hugepages", options=HUGETLBFS_64M)])
    bundle.set_shell(
        "cat /run/dpdk/hello; stat -f -c %T /dev/hugepages;"
        " fallocate -l 32M /dev/hugepages/small && echo small=ok;"
        " fallocate -l 128M /dev/hugepages/big 2>/dev/null && echo big=ok || echo big=refused"
    )

    proc = bundle.run()
    mnt_ns = bundle.hook_result()["mnt_ns"]
    bundle.delete()

    assert proc.returncode == 0, proc.stderr
    assert proc.stdout.splitlines() == ["hello from the host", "hugetlbfs", "small=ok", "big=refused"]
    hugetlbfs_after = {mp for mp, fs in host_mounts() if fs == "hugetlbfs"}
    assert not [mp for mp in hugetlbfs_after if under(mp, ws.path)]
    assert hugetlbfs_after <= hugetlbfs_before  # i.e. just the host's /dev/hugepages here
    # The private instance lives as long as the container's mount namespace: no process
    # (a stuck mount helper included) may keep it, and its pages go back to the pool.
    assert wait_for(lambda: not processes_in_mnt_ns(mnt_ns)), f"still in the container's namespace: {processes_in_mnt_ns(mnt_ns)}"

    def available(pages: tuple[int, int]) -> int:
        return pages[0] - pages[1]  # free and not reserved

    # ">=": other users of the host's pool may free pages meanwhile (one allocating more than
    # the 32 pages held here would still be mistaken for a leak).
    assert wait_for(lambda: available(hugepages()) >= available(pages_before)), f"hugepages (free, rsvd) {hugepages()}, before {pages_before}"


@pytest.mark.parametrize("var_run", ["missing", "symlink"])
def test_socket_file_binds(ws: Workspace, var_run: str) -> None:
    """A host unix socket bound as a single file is a live socket at both container paths, /var/run missing or a relative symlink."""
    sock_path = ws.path / "net0.sock"
    server = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    server.bind(str(sock_path))
    server.listen(1)
    server.settimeout(5)
    bundle = ws.bundle()
    if var_run == "symlink":
        (bundle.rootfs / "var").mkdir()
        (bundle.rootfs / "var" / "run").symlink_to("../run")
    bundle.set_hook([Mount("bind", "/run/dpdk/net0.sock", str(sock_path), file=True), Mount("bind", "/var/run/usvhost", str(sock_path), file=True)])
    connect = "import socket; s = socket.socket(socket.AF_UNIX); s.connect('/var/run/usvhost'); s.sendall(b'ping')"
    bundle.set_shell(f'test -S /run/dpdk/net0.sock && test -S /var/run/usvhost && echo sockets=ok && /usr/bin/python3 -I -c "{connect}"')

    try:
        proc = bundle.run()
        conn, _ = server.accept()
        with conn:
            received = conn.recv(16)
    finally:
        server.close()

    assert proc.returncode == 0, proc.stderr
    assert proc.stdout.strip() == "sockets=ok"
    assert received == b"ping"
    if var_run == "symlink":
        assert (bundle.rootfs / "var" / "run").is_symlink()  # followed inside the rootfs, not replaced
        assert (bundle.rootfs / "run" / "usvhost").is_file()
    else:
        assert (bundle.rootfs / "var" / "run").is_dir() and not (bundle.rootfs / "var" / "run").is_symlink()
        assert (bundle.rootfs / "var" / "run" / "usvhost").is_file()


@pytest.mark.parametrize("variant", ["run-absolute-dangling", "run-absolute", "run-relative", "dev-absolute"])
def test_malicious_rootfs_symlinks_stay_inside(ws: Workspace, variant: str) -> None:
    """Image symlinks pointing at host directories never put a mount or a file there: the mount lands inside the rootfs or is refused."""
    victim = ws.host_dir("victim-")
    (victim / "marker").write_text("do not touch\n")
    victim_before = snapshot(str(victim))
    bundle = ws.bundle()
    in_root_victim = bundle.rootfs / str(victim).lstrip("/")  # where RESOLVE_IN_ROOT takes the symlink
    if variant.startswith("run-"):
        link = str(victim) if "absolute" in variant else "../../../../../../../../.." + str(victim)
        (bundle.rootfs / "run").symlink_to(link)
        if variant != "run-absolute-dangling":
            in_root_victim.mkdir(parents=True)
        mounts = [Mount("bind", "/run/dpdk", str(host_source_dir(ws)))]
        landed = in_root_victim / "dpdk"
        bundle.set_shell("cat /run/dpdk/hello")
    else:
        for dev_mount in ("/dev", "/dev/pts", "/dev/shm", "/dev/mqueue"):
            bundle.drop_mount(dev_mount)
        (bundle.rootfs / "dev").symlink_to(str(victim))
        mounts = [Mount("hugetlbfs", "/dev/hugepages", options=HUGETLBFS_64M)]
        landed = in_root_victim / "hugepages"
        bundle.set_shell("stat -f -c %T /dev/hugepages")
    bundle.set_hook(mounts, watch=(victim,))

    proc = bundle.run()
    result = bundle.hook_result()
    container_mountpoints = hook_mountpoints(bundle)
    bundle.delete()

    # Nothing landed on the victim, in the container's namespace nor in the host's.
    assert not [mp for mp in container_mountpoints if under(mp, victim)]
    assert not [mp for mp, _ in host_mounts() if under(mp, victim)]
    # The hook itself changed nothing in the victim, and nothing did after it.
    assert result["watch_after"][str(victim)] == result["watch_before"][str(victim)]
    assert snapshot(str(victim)) == result["watch_before"][str(victim)]
    if variant.startswith("run-"):
        assert snapshot(str(victim)) == victim_before  # byte for byte, from start to end
    # else: runc 1.1.5 itself (before the hook runs) follows a /dev symlink for its
    # /dev/fd, /dev/std* and /dev/ptmx symlinks; that is runc's, not the hook's, to fix.

    if variant == "run-absolute-dangling":
        # /run resolves to <rootfs>/tmp/victim-..., which does not exist: refuse, create nothing.
        assert proc.returncode != 0
        assert result["ok"] is False and result["fields"]["target"] == "/run/dpdk"
        assert "symlink" in result["fields"]["reason"]
        assert not [mp for mp in container_mountpoints if under(mp, bundle.rootfs / "run")]
        assert not (bundle.rootfs / "tmp").exists()
    else:
        assert proc.returncode == 0, proc.stderr
        assert result["ok"] is True
        assert str(landed) in container_mountpoints
        expected = "hello from the host" if variant.startswith("run-") else "hugetlbfs"
        assert proc.stdout.strip() == expected


@pytest.mark.parametrize("bad", ["dir-symlink", "socket-symlink", "not-a-socket"])
def test_bad_sources_are_refused(ws: Workspace, bad: str) -> None:
    """A bind source that is a symlink, or a socket source that is not a socket, is refused before anything is created or mounted."""
    real_dir = host_source_dir(ws)
    if bad == "dir-symlink":
        source = ws.path / "link-to-dir"
        source.symlink_to(real_dir)
        mount = Mount("bind", "/run/dpdk", str(source))
        reason = "is a symlink"
    elif bad == "socket-symlink":
        real_sock = socket.socket(socket.AF_UNIX)
        real_sock.bind(str(ws.path / "real.sock"))
        real_sock.close()
        source = ws.path / "link-to-sock"
        source.symlink_to(ws.path / "real.sock")
        mount = Mount("bind", "/run/dpdk/net0.sock", str(source), file=True)
        reason = "is a symlink"
    else:
        source = real_dir / "hello"
        mount = Mount("bind", "/run/dpdk/net0.sock", str(source), file=True)
        reason = "is not a unix socket"
    bundle = ws.bundle()
    bundle.set_hook([mount])
    bundle.set_shell("true")

    proc = bundle.run()
    result = bundle.hook_result()

    assert proc.returncode != 0
    assert result["ok"] is False
    assert result["fields"]["target"] == mount.target
    assert reason in result["fields"]["reason"]
    assert not [mp for mp in hook_mountpoints(bundle) if under(mp, bundle.rootfs / "run")]
    assert not (bundle.rootfs / "run").exists()


def test_failure_undoes_earlier_mounts(ws: Workspace) -> None:
    """When a later mount fails (hugetlbfs min_size beyond the pool), the mounts made before it are gone when the container starts."""
    sock_path = ws.path / "net0.sock"
    with socket.socket(socket.AF_UNIX) as s:
        s.bind(str(sock_path))
    too_big_mib = (hugepages()[0] + 64) * 2  # more than the free 2M pages: the reservation fails
    bundle = ws.bundle()
    bundle.set_hook(
        [
            Mount("bind", "/run/dpdk", str(host_source_dir(ws))),
            Mount("bind", "/var/run/usvhost", str(sock_path), file=True),
            Mount("hugetlbfs", "/dev/hugepages", options=f"pagesize=2M,size={too_big_mib}M,min_size={too_big_mib}M"),
        ],
        fail_on_error=False,  # let the container start, to look at its mounts from inside
    )
    bundle.set_shell("cat /proc/self/mountinfo")

    proc = bundle.run()
    result = bundle.hook_result()

    assert result["ok"] is False
    assert result["fields"]["target"] == "/dev/hugepages"
    assert "not enough free hugepages for min_size" in result["fields"]["reason"]
    assert proc.returncode == 0, proc.stderr
    inside = mounts_of(proc.stdout)
    assert inside, "the container printed no mountinfo"
    assert not [mp for mp, fs in inside if mp in ("/run/dpdk", "/var/run/usvhost", "/dev/hugepages") or fs == "hugetlbfs"]
    assert not [mp for mp in hook_mountpoints(bundle) if under(mp, bundle.rootfs / "run") or under(mp, bundle.rootfs / "var")]


def test_remove_mounts_in_running_container(ws: Workspace) -> None:
    """remove_mounts detaches the hook's mounts inside a running (pivoted) container, and is a no-op once it is gone."""
    bundle = ws.bundle()
    bundle.set_hook([Mount("bind", "/run/dpdk", str(host_source_dir(ws))), Mount("hugetlbfs", "/dev/hugepages", options="pagesize=2M,size=16M")])
    bundle.set_command("/usr/bin/sleep", "30")
    pid = bundle.run_detached()

    def container_mountpoints() -> set[str]:
        with open(f"/proc/{pid}/mountinfo") as f:
            return {mp for mp, _ in mounts_of(f.read())}

    assert {"/run/dpdk", "/dev/hugepages"} <= container_mountpoints()
    remove_mounts(pid, str(bundle.rootfs), ["/run/dpdk", "/dev/hugepages", "/not/there"])
    assert not {"/run/dpdk", "/dev/hugepages"} & container_mountpoints()
    assert "/dev" in container_mountpoints()  # the runtime's own mounts are left alone
    remove_mounts(pid, str(bundle.rootfs), ["/run/dpdk", "/dev/hugepages"])  # nothing left to do

    bundle.delete()
    assert wait_for(lambda: not os.path.exists(f"/proc/{pid}")), f"container init {pid} outlived runc delete"
    remove_mounts(pid, str(bundle.rootfs), ["/run/dpdk", "/dev/hugepages"])  # namespace gone: returns


def test_helper_joins_the_namespace_while_another_thread_shares_its_root(ws: Workspace, monkeypatch: pytest.MonkeyPatch) -> None:
    """A forked helper that has a second thread (as libraries with fork handlers, grpc among them,
    leave in a child) still enters the container's mount namespace and does its work."""
    bundle = ws.bundle()
    bundle.set_hook([Mount("hugetlbfs", "/dev/hugepages", options="pagesize=2M,size=16M")])
    bundle.set_command("/usr/bin/sleep", "30")
    pid = bundle.run_detached()
    real_child_remove = hook.host.mounts._child_remove

    def with_a_thread(*args: object) -> None:
        blocker = threading.Event()
        threading.Thread(target=blocker.wait, daemon=True).start()  # shares the child's root and cwd
        real_child_remove(*args)  # type: ignore[arg-type]

    monkeypatch.setattr(hook.host.mounts, "_child_remove", with_a_thread)
    remove_mounts(pid, str(bundle.rootfs), ["/dev/hugepages"])
    with open(f"/proc/{pid}/mountinfo") as f:
        assert "/dev/hugepages" not in {mp for mp, _ in mounts_of(f.read())}
    bundle.delete()


def test_remove_mounts_before_pivot_root(ws: Workspace) -> None:
    """remove_mounts called from the prestart hook (a rollback) detaches the mounts before the container ever sees them."""
    sock_path = ws.path / "net0.sock"
    with socket.socket(socket.AF_UNIX) as s:
        s.bind(str(sock_path))
    mounts = [
        Mount("bind", "/run/dpdk", str(host_source_dir(ws))),
        Mount("bind", "/run/dpdk/net0.sock", str(sock_path), file=True),
        Mount("hugetlbfs", "/dev/hugepages", options="pagesize=2M,size=16M"),
    ]
    bundle = ws.bundle()
    bundle.set_hook(mounts, remove_after=tuple(m.target for m in mounts))
    bundle.set_shell("cat /proc/self/mountinfo")

    proc = bundle.run()

    assert proc.returncode == 0, proc.stderr
    assert bundle.hook_result()["ok"] is True
    inside = mounts_of(proc.stdout)
    assert inside, "the container printed no mountinfo"
    assert not [mp for mp, fs in inside if under(mp, "/run/dpdk") or mp == "/dev/hugepages" or fs == "hugetlbfs"]


def test_hung_helper_is_killed_after_the_timeout(ws: Workspace, monkeypatch: pytest.MonkeyPatch) -> None:
    """A mount helper that hangs is killed at the timeout and reported as a MountError."""
    bundle = ws.bundle()
    bundle.set_command("/usr/bin/sleep", "30")
    pid = bundle.run_detached()
    children_before = children()
    hang_r, hang_w = os.pipe()
    monkeypatch.setattr(hook.host.mounts, "_child_apply", lambda *args: os.read(hang_r, 1))  # blocks: nobody writes

    started = time.monotonic()
    try:
        with pytest.raises(MountError, match="timed out after 0.5s"):
            apply_mounts(pid, str(bundle.rootfs), [Mount("hugetlbfs", "/dev/hugepages", options="pagesize=2M,size=2M")], timeout_s=0.5)
    finally:
        os.close(hang_r)
        os.close(hang_w)

    assert time.monotonic() - started < 5
    assert children() <= children_before  # the killed helper was reaped, not left as a zombie


def test_refuses_the_hosts_own_mount_namespace(ws: Workspace) -> None:
    """A pid that shares the hook's mount namespace (not a container) is refused, and nothing is created."""
    rootfs = ws.path / "rootfs"
    rootfs.mkdir()

    with pytest.raises(MountError, match="shares the hook's mount namespace"):
        apply_mounts(os.getpid(), str(rootfs), [Mount("hugetlbfs", "/dev/hugepages", options="pagesize=2M,size=2M")])

    assert list(rootfs.iterdir()) == []


USERNS_HOST_ID = 100000  # the host uid and gid of the user-namespaced container's root


def test_mountpoints_in_a_user_namespace_belong_to_its_root(ws: Workspace) -> None:
    """In a container with its own user namespace, mountpoints made in its /dev (a tmpfs the host's root may not own) belong to its root."""
    os.chmod(ws.path, 0o755)  # the mapped root must reach its rootfs
    sock_path = ws.path / "net0.sock"
    with socket.socket(socket.AF_UNIX) as s:
        s.bind(str(sock_path))
    bundle = ws.bundle()
    for top in ("dev", "proc", "sys"):  # the rootfs is the host root's: the mapped root could not make them
        (bundle.rootfs / top).mkdir()
    cfg = bundle.config
    cfg["linux"]["namespaces"].append({"type": "user"})
    mapping = [{"containerID": 0, "hostID": USERNS_HOST_ID, "size": 65536}]
    cfg["linux"]["uidMappings"] = cfg["linux"]["gidMappings"] = mapping
    bundle.config = cfg
    mounts = [Mount("hugetlbfs", "/dev/hugepages", options="pagesize=2M,size=16M"), Mount("bind", "/dev/vhost/net0.sock", str(sock_path), file=True)]
    bundle.set_hook(mounts)
    bundle.set_command("/usr/bin/sleep", "30")
    pid = bundle.run_detached()

    with open(f"/proc/{pid}/mountinfo") as f:
        mounted = {mp for mp, _ in mounts_of(f.read())}
    remove_mounts(pid, str(bundle.rootfs), [m.target for m in mounts])  # uncover the mountpoints themselves
    made = ("/dev/hugepages", "/dev/vhost", "/dev/vhost/net0.sock")
    owners = {path: os.lstat(f"/proc/{pid}/root{path}") for path in made}
    dev = os.stat(f"/proc/{pid}/root/dev")
    bundle.delete()

    assert bundle.hook_result()["ok"] is True
    assert {"/dev/hugepages", "/dev/vhost/net0.sock"} <= mounted
    assert (dev.st_uid, dev.st_gid) == (USERNS_HOST_ID, USERNS_HOST_ID)  # the runtime's tmpfs, made in the namespace
    assert {path: (st.st_uid, st.st_gid) for path, st in owners.items()} == dict.fromkeys(made, (USERNS_HOST_ID, USERNS_HOST_ID))
    assert not (bundle.rootfs / "dev" / "vhost").exists()  # made in the container's /dev, not below its rootfs
