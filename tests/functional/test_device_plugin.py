"""The device plugin against a kubelet stand-in: registration, capacity, health, Allocate, restarts.

The plugin runs as the real command (``dpdk-oci-hook device-plugin``) in a subprocess.  The
test plays kubelet over gRPC exactly where kubelet would: it serves ``Registration`` on
``kubelet.sock`` in a private plugin directory, then dials the endpoint the plugin registered.
The switch is an ``ovs-vsctl`` stand-in script (``--ovs-vsctl``) whose answer the test flips,
as OVS answers ``dpdk_initialized``: ``true``, ``false``, or no answer at all.
"""

from __future__ import annotations

import os
import queue
import shutil
import signal
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Iterator
from concurrent import futures
from dataclasses import dataclass, field
from pathlib import Path

import pytest

grpc = pytest.importorskip("grpc")
api = pytest.importorskip("hook.kubernetes.deviceplugin_v1beta1_pb2")

from hook.kubernetes.defaults import ENDPOINT, RESOURCE_NAME  # noqa: E402

PORTS = 4
INTERVAL = 0.2
WAIT = 10.0

FAKE_OVS_VSCTL = """#!/bin/sh
# stands in for: ovs-vsctl --timeout=2 get Open_vSwitch . dpdk_initialized
state=$(cat "$(dirname "$0")/switch-state")
[ "$state" = down ] && { echo "ovs-vsctl: unix:/var/run/openvswitch/db.sock: database connection failed" >&2; exit 1; }
echo "$state"
"""


@dataclass
class FakeKubelet:
    """kubelet's Registration service on <dir>/kubelet.sock; records every RegisterRequest."""

    directory: str
    registered: queue.Queue = field(default_factory=queue.Queue)
    server: object = None

    def start(self) -> FakeKubelet:
        def register(request: object, context: object) -> object:
            self.registered.put(request)
            return api.Empty()

        handler = grpc.method_handlers_generic_handler("v1beta1.Registration", {
            "Register": grpc.unary_unary_rpc_method_handler(register, api.RegisterRequest.FromString, api.Empty.SerializeToString),
        })
        self.server = grpc.server(futures.ThreadPoolExecutor(max_workers=2))
        self.server.add_generic_rpc_handlers((handler,))
        assert self.server.add_insecure_port("unix://" + os.path.join(self.directory, "kubelet.sock"))
        self.server.start()
        return self

    def stop(self) -> None:
        self.server.stop(grace=0).wait()

    def next_registration(self) -> object:
        return self.registered.get(timeout=WAIT)


class PluginClient:
    """kubelet's side of the DevicePlugin service."""

    def __init__(self, socket_path: str) -> None:
        self.channel = grpc.insecure_channel("unix://" + socket_path)
        self.updates: queue.Queue = queue.Queue()

        def unary(name: str, request_type: type, response_type: type) -> object:
            return self.channel.unary_unary(f"/v1beta1.DevicePlugin/{name}", request_type.SerializeToString, response_type.FromString)

        self.options = unary("GetDevicePluginOptions", api.Empty, api.DevicePluginOptions)
        self.allocate = unary("Allocate", api.AllocateRequest, api.AllocateResponse)
        self.preferred = unary("GetPreferredAllocation", api.PreferredAllocationRequest, api.PreferredAllocationResponse)
        self.prestart = unary("PreStartContainer", api.PreStartContainerRequest, api.PreStartContainerResponse)
        stream = self.channel.unary_stream("/v1beta1.DevicePlugin/ListAndWatch", api.Empty.SerializeToString, api.ListAndWatchResponse.FromString)
        self.stream = stream(api.Empty(), wait_for_ready=True, timeout=60)
        threading.Thread(target=self._drain, daemon=True).start()

    def _drain(self) -> None:
        try:
            for update in self.stream:
                self.updates.put(update)
        except grpc.RpcError:
            pass

    def next_devices(self) -> dict[str, str]:
        update = self.updates.get(timeout=WAIT)
        return {d.ID: d.health for d in update.devices}

    def close(self) -> None:
        self.stream.cancel()
        self.channel.close()


def wait_for(predicate: object, what: str) -> None:
    deadline = time.monotonic() + WAIT
    while time.monotonic() < deadline:
        if predicate():  # type: ignore[operator]
            return
        time.sleep(0.05)
    raise AssertionError(f"timed out waiting for {what}")


@pytest.fixture
def node() -> Iterator[tuple[str, Path]]:
    """A private device plugin directory (short path: unix socket names are limited) and the switch stand-in."""
    directory = tempfile.mkdtemp(prefix="dp-")
    tools = Path(tempfile.mkdtemp(prefix="dp-ovs-"))
    script = tools / "ovs-vsctl"
    script.write_text(FAKE_OVS_VSCTL)
    script.chmod(0o755)
    (tools / "switch-state").write_text("true\n")
    try:
        yield directory, tools
    finally:
        shutil.rmtree(directory, ignore_errors=True)
        shutil.rmtree(tools, ignore_errors=True)


@pytest.fixture
def kubelet(node: tuple[str, Path]) -> Iterator[FakeKubelet]:
    fake = FakeKubelet(node[0]).start()
    yield fake
    fake.stop()


@pytest.fixture
def plugin(node: tuple[str, Path], kubelet: FakeKubelet) -> Iterator[subprocess.Popen]:
    directory, tools = node
    argv = [sys.executable, "-c", "import sys; from hook.admin.cli import main; sys.exit(main())", "device-plugin",
            "--ports", str(PORTS), "--plugin-dir", directory, "--health-interval", str(INTERVAL), "--ovs-vsctl", str(tools / "ovs-vsctl")]
    process = subprocess.Popen(argv, stderr=subprocess.PIPE, text=True)
    try:
        yield process
    finally:
        if process.poll() is None:
            process.send_signal(signal.SIGTERM)
            try:
                process.wait(timeout=WAIT)
            except subprocess.TimeoutExpired:
                process.kill()
                process.wait()
        if process.stderr:
            process.stderr.close()


def set_switch(tools: Path, state: str) -> None:
    (tools / "switch-state").write_text(state + "\n")


def test_registers_and_reports_capacity(node: tuple[str, Path], kubelet: FakeKubelet, plugin: subprocess.Popen) -> None:
    """The plugin registers its resource and endpoint with kubelet and lists one healthy device per port."""
    request = kubelet.next_registration()
    assert (request.version, request.resource_name, request.endpoint) == ("v1beta1", RESOURCE_NAME, ENDPOINT)
    socket_path = os.path.join(node[0], request.endpoint)
    client = PluginClient(socket_path)
    try:
        devices = client.next_devices()
        assert devices == {f"vhost-user-{i}": "Healthy" for i in range(PORTS)}
        options = client.options(api.Empty(), timeout=WAIT)
        assert options.get_preferred_allocation_available and not options.pre_start_required
        assert client.prestart(api.PreStartContainerRequest(devices_ids=["vhost-user-0"]), timeout=WAIT) == api.PreStartContainerResponse()
    finally:
        client.close()


def test_allocate_returns_the_hooks_annotation(node: tuple[str, Path], kubelet: FakeKubelet, plugin: subprocess.Popen) -> None:
    """Allocate answers each container with dpdk-oci-hook/vhost-user = its number of devices; bad ids are refused."""
    socket_path = os.path.join(node[0], kubelet.next_registration().endpoint)
    client = PluginClient(socket_path)
    try:
        request = api.AllocateRequest(container_requests=[
            api.ContainerAllocateRequest(devices_ids=["vhost-user-0", "vhost-user-3"]),
            api.ContainerAllocateRequest(devices_ids=["vhost-user-1"]),
        ])
        response = client.allocate(request, timeout=WAIT)
        assert [dict(c.annotations) for c in response.container_responses] == [
            {"dpdk-oci-hook/vhost-user": "2"}, {"dpdk-oci-hook/vhost-user": "1"}
        ]
        assert not response.container_responses[0].envs and not response.container_responses[0].mounts
        for bad in (["vhost-user-99"], ["vhost-user-0", "vhost-user-0"], []):
            with pytest.raises(grpc.RpcError) as info:
                client.allocate(api.AllocateRequest(container_requests=[api.ContainerAllocateRequest(devices_ids=bad)]), timeout=WAIT)
            assert info.value.code() == grpc.StatusCode.INVALID_ARGUMENT
        preferred = client.preferred(api.PreferredAllocationRequest(container_requests=[api.ContainerPreferredAllocationRequest(
            available_deviceIDs=["vhost-user-3", "vhost-user-1", "vhost-user-2"], must_include_deviceIDs=["vhost-user-2"], allocation_size=2,
        )]), timeout=WAIT)
        assert list(preferred.container_responses[0].deviceIDs) == ["vhost-user-2", "vhost-user-1"]
    finally:
        client.close()


def test_health_follows_the_switch(node: tuple[str, Path], kubelet: FakeKubelet, plugin: subprocess.Popen) -> None:
    """OVS unreachable or DPDK not initialised: every device Unhealthy and Allocate refused; back up: Healthy."""
    tools = node[1]
    client = PluginClient(os.path.join(node[0], kubelet.next_registration().endpoint))
    try:
        assert set(client.next_devices().values()) == {"Healthy"}
        set_switch(tools, "down")
        assert set(client.next_devices().values()) == {"Unhealthy"}
        with pytest.raises(grpc.RpcError) as info:
            client.allocate(api.AllocateRequest(container_requests=[api.ContainerAllocateRequest(devices_ids=["vhost-user-0"])]), timeout=WAIT)
        assert info.value.code() == grpc.StatusCode.FAILED_PRECONDITION
        set_switch(tools, "true")
        devices = client.next_devices()
        assert len(devices) == PORTS and set(devices.values()) == {"Healthy"}
        set_switch(tools, "false")  # ovs-vswitchd up, DPDK not initialised
        assert set(client.next_devices().values()) == {"Unhealthy"}
        set_switch(tools, "true")
        assert set(client.next_devices().values()) == {"Healthy"}
    finally:
        client.close()


def test_reregisters_when_kubelet_restarts(node: tuple[str, Path], kubelet: FakeKubelet, plugin: subprocess.Popen) -> None:
    """kubelet restarting empties the directory and makes a new kubelet.sock: the plugin serves and registers again."""
    directory = node[0]
    first = kubelet.next_registration()
    kubelet.stop()
    for name in os.listdir(directory):  # what kubelet does to the directory when it starts
        os.unlink(os.path.join(directory, name))
    restarted = FakeKubelet(directory).start()
    try:
        again = restarted.next_registration()
        assert (again.resource_name, again.endpoint) == (first.resource_name, first.endpoint)
        wait_for(lambda: os.path.exists(os.path.join(directory, again.endpoint)), "the plugin's socket")
        client = PluginClient(os.path.join(directory, again.endpoint))
        try:
            assert len(client.next_devices()) == PORTS
        finally:
            client.close()
    finally:
        restarted.stop()


def test_stops_on_sigterm_and_removes_its_socket(node: tuple[str, Path], kubelet: FakeKubelet, plugin: subprocess.Popen) -> None:
    socket_path = os.path.join(node[0], kubelet.next_registration().endpoint)
    assert os.path.exists(socket_path)
    plugin.send_signal(signal.SIGTERM)
    assert plugin.wait(timeout=WAIT) == 0
    assert not os.path.exists(socket_path)
    assert '"registered"' in (plugin.stderr.read() if plugin.stderr else "")
