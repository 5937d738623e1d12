"""The ``dpdk-oci-hook device-plugin`` command: its options, and running the plugin until a signal.

Light to import (the admin CLI builds its parser from here): gRPC loads only when the
command runs.
"""

from __future__ import annotations

import argparse
from typing import Any


def _port_count(text: str) -> int:
    from hook.kubernetes.defaults import MAX_PORTS

    if not (text.isascii() and text.isdigit()) or not 1 <= int(text) <= MAX_PORTS:
        raise argparse.ArgumentTypeError(f"{text[:20]!r} is not a whole number in 1..{MAX_PORTS}")
    return int(text)


def _interval(text: str) -> float:
    try:
        value = float(text)
    except ValueError:
        value = -1.0
    if not 0.05 <= value <= 3600:
        raise argparse.ArgumentTypeError(f"{text[:20]!r} is not a number of seconds in 0.05..3600")
    return value


def add_device_plugin_parser(sub: Any) -> None:
    """Register ``device-plugin`` with the admin CLI's subcommands."""
    from hook.kubernetes.defaults import DEFAULT_HEALTH_INTERVAL, DEFAULT_PORTS, DEVICE_PLUGIN_DIR

    p = sub.add_parser(
        "device-plugin",
        help="kubelet device plugin: advertise vhost-user ports as dpdk-oci-hook.io/vhost-user (needs the [kubernetes] extra)",
    )
    p.add_argument("--ports", type=_port_count, default=DEFAULT_PORTS,
                   help=f"vhost-user ports this node may hand out: the resource's capacity (default {DEFAULT_PORTS})")
    p.add_argument("--plugin-dir", default=DEVICE_PLUGIN_DIR, help=f"kubelet's device plugin directory (default {DEVICE_PLUGIN_DIR})")
    p.add_argument("--health-interval", type=_interval, default=DEFAULT_HEALTH_INTERVAL,
                   help=f"seconds between switch health checks (default {DEFAULT_HEALTH_INTERVAL:g})")
    p.add_argument("--ovs-vsctl", default="ovs-vsctl", help="ovs-vsctl program for the health check (default: from PATH)")
    p.add_argument("--ovs-db", default=None, help="OVSDB to ask, as ovs-vsctl's --db (default: ovs-vsctl's own)")
    p.set_defaults(func=cmd_device_plugin)


def cmd_device_plugin(args: Any) -> int:
    import signal
    import threading

    from hook.errors import EngineError

    try:
        from hook.kubernetes.device_plugin import DevicePlugin, ovs_health_probe
    except ImportError as exc:  # grpcio/protobuf are the optional [kubernetes] extra
        raise EngineError(engine="device plugin", reason=f"{exc}: install dpdk-oci-hook[kubernetes]") from exc

    stop = threading.Event()
    for signum in (signal.SIGTERM, signal.SIGINT):
        signal.signal(signum, lambda _signum, _frame: stop.set())
    plugin = DevicePlugin(
        ports=args.ports,
        probe=ovs_health_probe(args.ovs_vsctl, args.ovs_db),
        plugin_dir=args.plugin_dir,
        interval=args.health_interval,
    )
    plugin.run(stop)
    return 0
