"""Drive containerd's CRI as kubelet does: a small RuntimeService client, images without a registry, a private containerd.

- :class:`CriClient`: the ``runtime.v1.RuntimeService`` calls kubelet makes for a pod
  (RunPodSandbox ... RemovePodSandbox), over gRPC on containerd's socket, with the message
  module generated from the upstream CRI proto (:mod:`tests.helpers.cri_v1_pb2`).
- :func:`oci_archive`: an OCI image archive made from a rootfs tarball (no registry, no
  Docker), for ``ctr -n k8s.io images import``.
- :func:`private_cri_containerd`: containerd with the CRI plugin on, its own root, state and
  socket, a pause image of our own, and a CRI runtime ``dpdk`` whose ``BinaryName`` is the
  hook's wrapper (the block install.sh writes, with ``container_annotations`` so that the
  device plugin's annotations reach the spec).  Stopped by its pid.
"""

from __future__ import annotations

import contextlib
import hashlib
import io
import json
import os
import shutil
import signal
import subprocess
import tarfile
import tempfile
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import grpc

from tests.helpers import cri_v1_pb2 as cri

K8S_NAMESPACE = "k8s.io"  # containerd's namespace for CRI images and containers
PAUSE_IMAGE = "docker.io/dpdk-oci-hook/pause:test"
SERVICE = "/runtime.v1.RuntimeService/"
CALL_TIMEOUT = 120.0

_METHODS = {
    "Version": (cri.VersionRequest, cri.VersionResponse),
    "RunPodSandbox": (cri.RunPodSandboxRequest, cri.RunPodSandboxResponse),
    "StopPodSandbox": (cri.StopPodSandboxRequest, cri.StopPodSandboxResponse),
    "RemovePodSandbox": (cri.RemovePodSandboxRequest, cri.RemovePodSandboxResponse),
    "ListPodSandbox": (cri.ListPodSandboxRequest, cri.ListPodSandboxResponse),
    "CreateContainer": (cri.CreateContainerRequest, cri.CreateContainerResponse),
    "StartContainer": (cri.StartContainerRequest, cri.StartContainerResponse),
    "StopContainer": (cri.StopContainerRequest, cri.StopContainerResponse),
    "RemoveContainer": (cri.RemoveContainerRequest, cri.RemoveContainerResponse),
    "ContainerStatus": (cri.ContainerStatusRequest, cri.ContainerStatusResponse),
}


class CriClient:
    """kubelet's side of the CRI RuntimeService: ``client.call("StartContainer", container_id=...)``."""

    def __init__(self, address: str) -> None:
        self.channel = grpc.insecure_channel("unix://" + address)
        self._stubs = {
            name: self.channel.unary_unary(SERVICE + name, request_serializer=req.SerializeToString, response_deserializer=resp.FromString)
            for name, (req, resp) in _METHODS.items()
        }

    def call(self, method: str, timeout: float = CALL_TIMEOUT, **fields: Any) -> Any:
        request_type = _METHODS[method][0]
        return self._stubs[method](request_type(**fields), timeout=timeout, wait_for_ready=True)

    def remove_everything(self) -> None:
        """Stop and remove every pod sandbox (their containers go with them), as kubelet would on drain."""
        for sandbox in self.call("ListPodSandbox").items:
            with contextlib.suppress(grpc.RpcError):
                self.call("StopPodSandbox", pod_sandbox_id=sandbox.id)
            with contextlib.suppress(grpc.RpcError):
                self.call("RemovePodSandbox", pod_sandbox_id=sandbox.id)

    def close(self) -> None:
        self.channel.close()


def host_network_sandbox(name: str, uid: str, namespace: str, log_directory: str) -> Any:
    """A PodSandboxConfig with the node's network (no CNI), as kubelet sends for hostNetwork: true.

    No hostname: with the node's network the pod shares the node's UTS namespace too, and
    runc refuses to set a hostname there (kubelet leaves it empty for such pods).
    """
    return cri.PodSandboxConfig(
        metadata=cri.PodSandboxMetadata(name=name, uid=uid, namespace=namespace, attempt=0),
        log_directory=log_directory,
        linux=cri.LinuxPodSandboxConfig(
            security_context=cri.LinuxSandboxSecurityContext(namespace_options=cri.NamespaceOption(network=cri.NODE)),
        ),
    )


# --- images ---------------------------------------------------------------------------------


def _blob(tar: tarfile.TarFile, data: bytes) -> tuple[str, int]:
    digest = "sha256:" + hashlib.sha256(data).hexdigest()
    info = tarfile.TarInfo("blobs/sha256/" + digest.split(":")[1])
    info.size = len(data)
    tar.addfile(info, io.BytesIO(data))
    return digest, len(data)


def oci_archive(rootfs_tar: Path, name: str, output: Path, entrypoint: list[str] | None = None, env: list[str] | None = None) -> Path:
    """An OCI image archive (one uncompressed layer: the rootfs tarball) named ``name`` for ctr import."""
    layer = rootfs_tar.read_bytes()
    layer_digest = "sha256:" + hashlib.sha256(layer).hexdigest()
    config = {
        "architecture": "amd64",
        "os": "linux",
        "config": {"Entrypoint": entrypoint or [], "Env": env or ["PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin"]},
        "rootfs": {"type": "layers", "diff_ids": [layer_digest]},
    }
    with tarfile.open(output, "w") as tar:
        _blob(tar, layer)
        config_digest, config_size = _blob(tar, json.dumps(config).encode())
        manifest = {
            "schemaVersion": 2,
            "mediaType": "application/vnd.oci.image.manifest.v1+json",
            "config": {"mediaType": "application/vnd.oci.image.config.v1+json", "digest": config_digest, "size": config_size},
            "layers": [{"mediaType": "application/vnd.oci.image.layer.v1.tar", "digest": layer_digest, "size": len(layer)}],
        }
        manifest_digest, manifest_size = _blob(tar, json.dumps(manifest).encode())
        index = {
            "schemaVersion": 2,
            "manifests": [{
                "mediaType": "application/vnd.oci.image.manifest.v1+json", "digest": manifest_digest, "size": manifest_size,
                "platform": {"architecture": "amd64", "os": "linux"},
                "annotations": {"io.containerd.image.name": name, "org.opencontainers.image.ref.name": name.rsplit(":", 1)[-1]},
            }],
        }
        for file_name, content in (("oci-layout", {"imageLayoutVersion": "1.0.0"}), ("index.json", index)):
            data = json.dumps(content).encode()
            info = tarfile.TarInfo(file_name)
            info.size = len(data)
            tar.addfile(info, io.BytesIO(data))
    return output


# --- containerd with CRI ----------------------------------------------------------------------


@dataclass
class CriContainerd:
    dir: Path
    address: str
    proc: subprocess.Popen[bytes]
    client: CriClient

    def ctr(self, *args: str, timeout: float = 300.0) -> subprocess.CompletedProcess[str]:
        return subprocess.run(["ctr", "--address", self.address, "--namespace", K8S_NAMESPACE, *args],
                              capture_output=True, text=True, timeout=timeout, check=False)

    def import_image(self, archive: Path) -> None:
        done = self.ctr("images", "import", str(archive))
        if done.returncode:
            raise RuntimeError(f"ctr images import {archive.name}: {done.stderr[-2000:]}")

    def log(self) -> str:
        return (self.dir / "containerd.log").read_text(errors="replace")


def cri_config(top: Path, address: str, wrapper: str) -> str:
    cri_table = 'plugins."io.containerd.grpc.v1.cri"'
    return f"""version = 2
root = "{top / 'root'}"
state = "{top / 'state'}"
[grpc]
  address = "{address}"
[ttrpc]
  address = "{address}.ttrpc"
[debug]
  address = "{address}.debug"
[{cri_table}]
  sandbox_image = "{PAUSE_IMAGE}"
  disable_apparmor = true
  # a host without CAP_SYS_RESOURCE cannot lower oom_score_adj to the sandbox's -998: runc
  # init dies before it reports a pid; cap every container's score at containerd's own
  restrict_oom_score_adj = true
  # containerd's default drops kubelet's hugepage limits from every spec: let them through
  disable_hugetlb_controller = false
  tolerate_missing_hugetlb_controller = false
  stream_server_address = "127.0.0.1"
  stream_server_port = "0"
  [{cri_table}.cni]
    bin_dir = "{top / 'cni-bin'}"
    conf_dir = "{top / 'cni-conf'}"
  [{cri_table}.containerd]
    default_runtime_name = "runc"
    [{cri_table}.containerd.runtimes.runc]
      runtime_type = "io.containerd.runc.v2"
    [{cri_table}.containerd.runtimes.dpdk]
      runtime_type = "io.containerd.runc.v2"
      pod_annotations = ["dpdk-oci-hook/*"]
      container_annotations = ["dpdk-oci-hook/*"]
    [{cri_table}.containerd.runtimes.dpdk.options]
      BinaryName = "{wrapper}"
"""


@contextlib.contextmanager
def private_cri_containerd(wrapper: str, pause_rootfs_tar: Path, env: dict[str, str] | None = None) -> Iterator[CriContainerd]:
    """containerd with CRI on a private socket; the pause image imported; every pod removed at the end."""
    top = Path(tempfile.mkdtemp(prefix="cri", dir="/tmp"))
    address = str(top / "c.sock")
    (top / "config.toml").write_text(cri_config(top, address, wrapper))
    log = open(top / "containerd.log", "wb")  # closed in the finally below
    proc = subprocess.Popen(["containerd", "--config", str(top / "config.toml")], stdin=subprocess.DEVNULL, stdout=log,
                            stderr=subprocess.STDOUT, env={**os.environ, **(env or {})}, start_new_session=True)
    client = CriClient(address)
    instance = CriContainerd(top, address, proc, client)
    try:
        deadline = time.monotonic() + 30
        while not os.path.exists(address):
            if proc.poll() is not None or time.monotonic() > deadline:
                raise RuntimeError("containerd did not start:\n" + instance.log()[-2000:])
            time.sleep(0.1)
        client.call("Version", timeout=30)
        pause = oci_archive(pause_rootfs_tar, PAUSE_IMAGE, top / "pause.tar", entrypoint=["/bin/sleep", "2147483647"])
        instance.import_image(pause)
        yield instance
    finally:
        with contextlib.suppress(Exception):
            client.remove_everything()
        client.close()
        if proc.poll() is None:
            proc.send_signal(signal.SIGTERM)
            try:
                proc.wait(timeout=20)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait(timeout=10)
        log.close()
        for sub in ("root", "state"):
            subprocess.run(["umount", "-R", "-l", str(top / sub)], capture_output=True, check=False)
        if os.environ.get("KEEP_CRI"):
            print(f"containerd's tree kept in {top}")
        else:
            shutil.rmtree(top, ignore_errors=True)
