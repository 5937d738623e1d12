"""The kubelet device plugin (API v1beta1) that makes vhost-user ports a schedulable resource.

kubelet serves ``Registration`` on ``<plugin dir>/kubelet.sock``; this plugin serves
``DevicePlugin`` on its own socket in the same directory and registers with the resource
name ``dpdk-oci-hook.io/vhost-user``.  It advertises N identical devices, one per port the node
may hand out, so the scheduler places a pod only where ports are left:

- ``ListAndWatch`` streams the devices; their health follows the switch: OVS reachable and
  ``dpdk_initialized`` (checked with ``ovs-vsctl`` every few seconds), else all Unhealthy,
  which takes them out of the node's allocatable count until the switch is back.
- ``Allocate`` answers each container with the hook's annotation
  ``dpdk-oci-hook/vhost-user = <number of devices>``; kubelet hands it to the runtime in the
  container's config, and the hook does the rest when the container is created.  Device ids
  carry no meaning for the hook: ports are made per container, named by the hook.
- kubelet forgets every plugin when it restarts (it empties the directory and makes a new
  ``kubelet.sock``): the plugin notices its socket gone or kubelet's socket replaced, serves
  again and re-registers.

gRPC service glue is written here against the generated message module
(:mod:`hook.kubernetes.deviceplugin_v1beta1_pb2`); nothing on the hook's hot path imports it.
"""

from __future__ import annotations

import os
import stat
import subprocess
import sys
import threading
from collections.abc import Callable, Iterator
from concurrent import futures
from typing import Any

import grpc

from hook.constants import PREFIX
from hook.errors import EngineError
from hook.kubernetes import deviceplugin_v1beta1_pb2 as api
from hook.kubernetes.defaults import API_VERSION, DEFAULT_HEALTH_INTERVAL, DEVICE_PLUGIN_DIR, ENDPOINT, KUBELET_SOCKET, RESOURCE_NAME

HEALTHY = "Healthy"
UNHEALTHY = "Unhealthy"
REGISTER_TIMEOUT = 5.0
PROBE_TIMEOUT = 5.0  # ovs-vsctl gets --timeout=2; this bounds a hung process
SERVICE = "v1beta1.DevicePlugin"

Probe = Callable[[], bool]
Log = Callable[..., None]


class KubeletError(EngineError):
    """kubelet refused or did not answer the plugin's registration."""


def device_ids(count: int) -> list[str]:
    """The ids of the node's port devices: ``vhost-user-0`` ... (at most 63 characters each)."""
    return [f"vhost-user-{i}" for i in range(count)]


def allocation_annotations(count: int) -> dict[str, str]:
    """The annotations a container with ``count`` port devices gets: what the hook reads."""
    return {PREFIX + "vhost-user": str(count)}


def ovs_health_probe(ovs_vsctl: str = "ovs-vsctl", db: str | None = None) -> Probe:
    """A probe that is True while OVS answers and its DPDK is initialised."""
    argv = [ovs_vsctl, "--timeout=2", *([f"--db={db}"] if db else []), "get", "Open_vSwitch", ".", "dpdk_initialized"]

    def probe() -> bool:
        try:
            done = subprocess.run(argv, capture_output=True, text=True, timeout=PROBE_TIMEOUT, check=False)
        except (OSError, subprocess.TimeoutExpired):
            return False
        return done.returncode == 0 and done.stdout.strip() == "true"

    return probe


def stderr_log(event: str, **fields: Any) -> None:
    """One JSON line on stderr (a DaemonSet's log)."""
    import json
    import time

    line = {"time": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()), "event": event, **fields}
    sys.stderr.write(json.dumps(line, default=str) + "\n")
    sys.stderr.flush()


class DeviceHealth:
    """The devices' health, shared by the probe loop and every ListAndWatch stream."""

    def __init__(self, healthy: bool) -> None:
        self._healthy = healthy
        self._version = 0
        self._changed = threading.Condition()
        self._closed = False

    def snapshot(self) -> tuple[int, bool, bool]:
        """(version, healthy, closed)."""
        with self._changed:
            return self._version, self._healthy, self._closed

    def set(self, healthy: bool) -> bool:
        """Record the switch's state; True when it changed."""
        with self._changed:
            if healthy == self._healthy:
                return False
            self._healthy = healthy
            self._version += 1
            self._changed.notify_all()
            return True

    def close(self) -> None:
        """End every stream (the server is going away)."""
        with self._changed:
            self._closed = True
            self._changed.notify_all()

    def wait(self, version: int, timeout: float) -> None:
        with self._changed:
            self._changed.wait_for(lambda: self._version != version or self._closed, timeout)


class DevicePluginService:
    """The DevicePlugin service's methods (gRPC's servicer signatures: request, context)."""

    def __init__(self, ids: list[str], health: DeviceHealth, log: Log = stderr_log) -> None:
        self.ids = ids
        self.known = frozenset(ids)
        self.health = health
        self.log = log

    def get_options(self, request: api.Empty, context: grpc.ServicerContext) -> api.DevicePluginOptions:
        return api.DevicePluginOptions(pre_start_required=False, get_preferred_allocation_available=True)

    def devices(self, healthy: bool) -> api.ListAndWatchResponse:
        state = HEALTHY if healthy else UNHEALTHY
        return api.ListAndWatchResponse(devices=[api.Device(ID=i, health=state) for i in self.ids])

    def list_and_watch(self, request: api.Empty, context: grpc.ServicerContext) -> Iterator[api.ListAndWatchResponse]:
        sent = -1
        while context.is_active():
            version, healthy, closed = self.health.snapshot()
            if closed:
                return
            if version != sent:
                yield self.devices(healthy)
                sent = version
            self.health.wait(sent, timeout=1.0)  # wakes on a change; the timeout notices a gone client

    def allocate(self, request: api.AllocateRequest, context: grpc.ServicerContext) -> api.AllocateResponse:
        responses = []
        _version, healthy, _closed = self.health.snapshot()
        for container in request.container_requests:
            ids = list(container.devices_ids)
            unknown = sorted(set(ids) - self.known)
            if unknown or len(set(ids)) != len(ids) or not ids:
                reason = f"unknown device ids {unknown[:4]}" if unknown else "device ids must be distinct and not empty"
                self.log("allocate refused", reason=reason, devices=ids[:8])
                context.abort(grpc.StatusCode.INVALID_ARGUMENT, reason)
            if not healthy:
                self.log("allocate refused", reason="switch down", devices=ids[:8])
                context.abort(grpc.StatusCode.FAILED_PRECONDITION, "the host DPDK switch is down: no vhost-user ports now")
            responses.append(api.ContainerAllocateResponse(annotations=allocation_annotations(len(ids))))
            self.log("allocated", devices=ids)
        return api.AllocateResponse(container_responses=responses)

    def get_preferred_allocation(self, request: api.PreferredAllocationRequest, context: grpc.ServicerContext) -> api.PreferredAllocationResponse:
        """The devices are interchangeable: the ones that must be included, then the lowest ids."""
        responses = []
        for container in request.container_requests:
            chosen = list(dict.fromkeys(container.must_include_deviceIDs))
            order = {device: index for index, device in enumerate(self.ids)}
            rest = sorted((d for d in container.available_deviceIDs if d not in chosen), key=lambda d: order.get(d, len(order)))
            chosen += rest[: max(container.allocation_size - len(chosen), 0)]
            responses.append(api.ContainerPreferredAllocationResponse(deviceIDs=chosen))
        return api.PreferredAllocationResponse(container_responses=responses)

    def pre_start_container(self, request: api.PreStartContainerRequest, context: grpc.ServicerContext) -> api.PreStartContainerResponse:
        return api.PreStartContainerResponse()  # not required (see get_options): nothing to reset

    def handler(self) -> grpc.GenericRpcHandler:
        def unary(method: Callable[..., Any], request_type: Any, response_type: Any) -> grpc.RpcMethodHandler:
            return grpc.unary_unary_rpc_method_handler(method, request_type.FromString, response_type.SerializeToString)

        return grpc.method_handlers_generic_handler(SERVICE, {
            "GetDevicePluginOptions": unary(self.get_options, api.Empty, api.DevicePluginOptions),
            "ListAndWatch": grpc.unary_stream_rpc_method_handler(
                self.list_and_watch, api.Empty.FromString, api.ListAndWatchResponse.SerializeToString
            ),
            "GetPreferredAllocation": unary(self.get_preferred_allocation, api.PreferredAllocationRequest, api.PreferredAllocationResponse),
            "Allocate": unary(self.allocate, api.AllocateRequest, api.AllocateResponse),
            "PreStartContainer": unary(self.pre_start_container, api.PreStartContainerRequest, api.PreStartContainerResponse),
        })


def _socket_identity(path: str) -> tuple[int, int] | None:
    try:
        st = os.stat(path)
    except OSError:
        return None
    return (st.st_dev, st.st_ino) if stat.S_ISSOCK(st.st_mode) else None


class DevicePlugin:
    """Serve, register, follow the switch's health, and start over when kubelet restarts."""

    def __init__(
        self,
        ports: int,
        probe: Probe,
        plugin_dir: str = DEVICE_PLUGIN_DIR,
        interval: float = DEFAULT_HEALTH_INTERVAL,
        resource_name: str = RESOURCE_NAME,
        endpoint: str = ENDPOINT,
        log: Log = stderr_log,
    ) -> None:
        self.ports = ports
        self.probe = probe
        self.plugin_dir = plugin_dir
        self.interval = interval
        self.resource_name = resource_name
        self.endpoint = endpoint
        self.log = log
        self.socket_path = os.path.join(plugin_dir, endpoint)
        self.kubelet_socket = os.path.join(plugin_dir, KUBELET_SOCKET)
        self.health = DeviceHealth(False)
        self.service = DevicePluginService(device_ids(ports), self.health, log)

    def serve(self) -> grpc.Server:
        """Start the DevicePlugin service on its socket (a stale socket file is replaced)."""
        if _socket_identity(self.socket_path) is not None:
            os.unlink(self.socket_path)
        server = grpc.server(futures.ThreadPoolExecutor(max_workers=8, thread_name_prefix="device-plugin"))
        server.add_generic_rpc_handlers((self.service.handler(),))
        try:
            bound = server.add_insecure_port("unix://" + self.socket_path)
        except RuntimeError as exc:
            raise KubeletError(engine="device plugin", reason=f"cannot listen on {self.socket_path}: {exc}") from exc
        if not bound:
            raise KubeletError(engine="device plugin", reason=f"cannot listen on {self.socket_path}")
        server.start()
        return server

    def register(self) -> None:
        """Tell kubelet the resource name and our endpoint; KubeletError if it refuses."""
        request = api.RegisterRequest(
            version=API_VERSION,
            endpoint=self.endpoint,
            resource_name=self.resource_name,
            options=api.DevicePluginOptions(pre_start_required=False, get_preferred_allocation_available=True),
        )
        with grpc.insecure_channel("unix://" + self.kubelet_socket) as channel:
            register = channel.unary_unary(
                "/v1beta1.Registration/Register",
                request_serializer=api.RegisterRequest.SerializeToString,
                response_deserializer=api.Empty.FromString,
            )
            try:
                register(request, timeout=REGISTER_TIMEOUT, wait_for_ready=True)
            except grpc.RpcError as exc:
                code = exc.code() if isinstance(exc, grpc.Call) else None
                detail = exc.details() if isinstance(exc, grpc.Call) else str(exc)
                raise KubeletError(engine="kubelet", reason=f"registration at {self.kubelet_socket} failed: {code}: {detail}") from exc

    def check_health(self) -> bool:
        healthy = self.probe()
        if self.health.set(healthy):
            self.log("switch health changed", healthy=healthy, devices=self.ports)
        return healthy

    def run(self, stop: threading.Event) -> None:
        """Until ``stop`` is set: serve and register, then probe every interval; start over when kubelet restarts."""
        self.check_health()
        while not stop.is_set():
            server = self.serve()
            try:
                kubelet = self._register_until_done(stop)
                while kubelet is not None and not stop.wait(self.interval):
                    self.check_health()
                    if _socket_identity(self.socket_path) is None:
                        self.log("our socket is gone (kubelet restarted?): serving again")
                        break
                    if _socket_identity(self.kubelet_socket) != kubelet:
                        self.log("kubelet's socket was replaced (kubelet restarted): registering again")
                        break
            finally:
                self.health.close()
                server.stop(grace=1).wait()
                self.health = DeviceHealth(self.health.snapshot()[1])
                self.service.health = self.health
        if _socket_identity(self.socket_path) is not None:
            os.unlink(self.socket_path)

    def _register_until_done(self, stop: threading.Event) -> tuple[int, int] | None:
        """kubelet's socket identity once registered; None if stopped first."""
        while not stop.is_set():
            kubelet = _socket_identity(self.kubelet_socket)
            if kubelet is not None:
                try:
                    self.register()
                except KubeletError as exc:
                    self.log("registration failed, retrying", error=str(exc))
                else:
                    self.log("registered", resource=self.resource_name, endpoint=self.endpoint, devices=self.ports)
                    return kubelet
            stop.wait(self.interval)
        return None
