"""The host configuration: HCL on disk, validated into a :class:`Config`, cached as JSON.

Parsing HCL costs ~50 ms of imports, so the hot path reads a JSON cache keyed by the HCL
file's identity (device, inode, size, mtime) and only falls back to HCL when it changed.
"""

from __future__ import annotations

import json
import os
from dataclasses import asdict, dataclass, field, replace
from typing import Any

from hook.errors import ConfigError
from hook.units import NAME_CHARS, format_cpulist, format_size_kib, parse_cpulist, parse_size_kib

try:  # built into the interpreter: hashlib loads OpenSSL, ~3 ms per hook start
    from _sha256 import sha256
except ImportError:  # Python 3.12+ calls it _sha2; hashlib where neither is built in
    try:
        from _sha2 import sha256
    except ImportError:
        from hashlib import sha256

DEFAULT_PATH = "/etc/dpdk-oci-hook/config.hcl"
ENV_PATH = "DPDK_OCI_HOOK_CONFIG"
CACHE_FORMAT = 2
BACKENDS = ("ovs", "static")
HUGEPAGE_SIZES_KIB = (2048, 1048576)


@dataclass(frozen=True)
class SwitchConfig:
    """Which host switch the hook plugs ports into, and how to reach it."""

    backend: str = "ovs"
    bridge: str = "br-dpdk"
    create_bridge: bool = True
    ovs_vsctl: str = "/usr/bin/ovs-vsctl"
    ovsdb: str = ""  # empty: ovs-vsctl's default database socket
    ovs_rundir: str = "/var/run/openvswitch"  # where OVS makes dpdkvhostuser (client-mode) sockets
    timeout_s: float = 5.0
    static_sockets: tuple[str, ...] = ()
    # Set from state_dir, not by hand: every owner record on the switch carries it, so two
    # installations (two state_dirs) sharing one OVS never see or remove each other's ports.
    scope: str = ""
    # The bridges containers may use (the policy's); the hook never creates any other bridge
    # and never changes the settings of one that exists.
    bridges: tuple[str, ...] = ()
    # Each port may send only from its own MAC (and a kernel port's addresses): OpenFlow rules.
    anti_spoofing: bool = True


@dataclass(frozen=True)
class BridgePolicy:
    """What containers may ask for on one bridge (config.hcl ``policy { bridge "NAME" {...} }``)."""

    name: str
    vlan_required: bool = False  # a port must name a VLAN (then it is an access port of it)
    vlans: frozenset[int] = frozenset(range(1, 4095))  # VLAN ids a port may name
    allow_mac: bool = True  # the container may choose its ports' MACs (unique on the bridge)
    allow_addresses: bool = True  # the container may choose its kernel ports' IP addresses


@dataclass(frozen=True)
class Limits:
    """Per-container caps; a request above any of them is refused."""

    max_cpus: int = 4
    max_hugepages_kib: int = 4 * 1024 * 1024
    max_ports: int = 8
    max_queues: int = 8


@dataclass(frozen=True)
class Config:
    """Validated host configuration."""

    path: str = DEFAULT_PATH
    state_dir: str = "/run/dpdk-oci-hook"
    log_file: str = "/var/log/dpdk-oci-hook.log"
    cpu_pool: frozenset[int] = frozenset()
    reserved_cpus: frozenset[int] = frozenset()  # e.g. OVS PMD cores: never handed out
    hugepage_size_kib: int = 2048
    hugepage_budget_kib: int = 1024 * 1024
    grow_pool: bool = False
    switch: SwitchConfig = field(default_factory=SwitchConfig)
    limits: Limits = field(default_factory=Limits)
    policy: tuple[BridgePolicy, ...] = ()  # empty: the configured bridge with the defaults above
    # Link names containers outside a pod may use (``links { allow = [...] }``): a name, or a
    # prefix ending in ``*``.  Containers of one pod may always link to each other.
    link_allow: tuple[str, ...] = ()

    def link_allowed(self, name: str) -> bool:
        """Whether the host policy lets containers outside a pod use the link ``name``."""
        return any(name.startswith(p[:-1]) if p.endswith("*") else name == p for p in self.link_allow)

    def bridge_policy(self, bridge: str) -> BridgePolicy | None:
        """The policy of ``bridge``, or None when containers may not use it."""
        for item in self.policy or (BridgePolicy(self.switch.bridge),):
            if item.name == bridge:
                return item
        return None

    @property
    def ledger_path(self) -> str:
        return os.path.join(self.state_dir, "ledger.json")

    def to_json(self) -> dict[str, Any]:
        raw = asdict(self)
        raw["cpu_pool"] = sorted(self.cpu_pool)
        raw["reserved_cpus"] = sorted(self.reserved_cpus)
        raw["switch"]["static_sockets"] = list(self.switch.static_sockets)
        raw["switch"]["bridges"] = list(self.switch.bridges)
        raw["policy"] = [{**asdict(p), "vlans": format_cpulist(p.vlans)} for p in self.policy]
        raw["link_allow"] = list(self.link_allow)
        return raw

    @classmethod
    def from_json(cls, raw: dict[str, Any]) -> Config:
        data = dict(raw)
        data["cpu_pool"] = frozenset(data["cpu_pool"])
        data["reserved_cpus"] = frozenset(data["reserved_cpus"])
        sw = dict(data["switch"])
        sw["static_sockets"] = tuple(sw["static_sockets"])
        sw["bridges"] = tuple(sw["bridges"])
        data["switch"] = SwitchConfig(**sw)
        data["policy"] = tuple(BridgePolicy(**{**p, "vlans": parse_cpulist(p["vlans"])}) for p in data.get("policy", ()))
        data["limits"] = Limits(**data["limits"])
        data["link_allow"] = tuple(data.get("link_allow", ()))
        return cls(**data)


def config_path() -> str:
    return os.environ.get(ENV_PATH) or DEFAULT_PATH


def _strip(value: Any) -> Any:
    """Undo python-hcl2's habit (v7+) of keeping quotes and block markers."""
    if isinstance(value, str) and len(value) >= 2 and value[0] == value[-1] == '"':
        return value[1:-1]
    if isinstance(value, list):
        return [_strip(v) for v in value]
    if isinstance(value, dict):  # drops "__is_block__", "__comments__" and the like
        return {k: _strip(v) for k, v in value.items() if not (k.startswith("__") and k.endswith("__"))}
    return value


def parse_hcl(text: str, path: str) -> dict[str, Any]:
    """Parse HCL text into plain Python values (blocks as dicts)."""
    import hcl2  # heavy: only when the cache is stale

    try:
        options = getattr(hcl2, "SerializationOptions", None)
        raw = hcl2.loads(text, serialization_options=options(with_comments=False)) if options else hcl2.loads(text)
    except Exception as exc:  # lark raises many types; all mean "not valid HCL"
        first = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
        raise ConfigError(path=path, reason=f"not valid HCL: {first}") from exc
    data = _strip(raw)
    for key, value in list(data.items()):
        if isinstance(value, list) and value and all(isinstance(v, dict) for v in value):
            if len(value) > 1:
                raise ConfigError(path=path, reason=f"block {key!r} given {len(value)} times")
            data[key] = value[0]
    return data


def _take(section: dict[str, Any], key: str, kind: type, path: str, where: str) -> Any:
    value = section.pop(key)
    if kind is float and isinstance(value, int) and not isinstance(value, bool):
        value = float(value)
    if not isinstance(value, kind) or (kind is int and isinstance(value, bool)):
        raise ConfigError(path=path, reason=f"{where}{key} must be {kind.__name__}, got {value!r}")
    return value


def _no_leftovers(section: dict[str, Any], path: str, where: str) -> None:
    if section:
        raise ConfigError(path=path, reason=f"unknown setting {where}{sorted(section)[0]}")


def validate(data: dict[str, Any], path: str) -> Config:
    """Turn parsed HCL into a Config, or raise ConfigError naming the bad setting."""
    data = dict(data)
    top: dict[str, Any] = {}
    for key in ("state_dir", "log_file"):
        if key in data:
            top[key] = _take(data, key, str, path, "")
    for key in ("state_dir",):
        if key in top and not os.path.isabs(top[key]):
            raise ConfigError(path=path, reason=f"{key} must be an absolute path")

    cpus = dict(data.pop("cpus", {}) or {})
    try:
        pool = parse_cpulist(_take(cpus, "pool", str, path, "cpus.")) if "pool" in cpus else None
        reserved = (
            parse_cpulist(_take(cpus, "reserved", str, path, "cpus."))
            if "reserved" in cpus
            else frozenset()
        )
    except ValueError as exc:
        raise ConfigError(path=path, reason=f"cpus: {exc}") from exc
    _no_leftovers(cpus, path, "cpus.")
    if pool is None:
        raise ConfigError(path=path, reason="cpus.pool is required (the cores the hook may give out)")
    if pool & reserved:
        from hook.units import format_cpulist

        raise ConfigError(
            path=path,
            reason=f"cpus.pool overlaps cpus.reserved on {format_cpulist(pool & reserved)}",
        )

    huge = dict(data.pop("hugepages", {}) or {})
    hp: dict[str, Any] = {}
    try:
        if "page_size" in huge:
            hp["hugepage_size_kib"] = parse_size_kib(_take(huge, "page_size", str, path, "hugepages."))
        if "budget" in huge:
            hp["hugepage_budget_kib"] = parse_size_kib(_take(huge, "budget", str, path, "hugepages."))
    except ValueError as exc:
        raise ConfigError(path=path, reason=f"hugepages: {exc}") from exc
    if "grow_pool" in huge:
        hp["grow_pool"] = _take(huge, "grow_pool", bool, path, "hugepages.")
    _no_leftovers(huge, path, "hugepages.")
    size = hp.get("hugepage_size_kib", 2048)
    if size not in HUGEPAGE_SIZES_KIB:
        raise ConfigError(path=path, reason=f"hugepages.page_size must be 2Mi or 1Gi, got {format_size_kib(size)}")
    if hp.get("hugepage_budget_kib", 1 << 20) % size:
        raise ConfigError(path=path, reason="hugepages.budget must be a multiple of page_size")

    sw_raw = dict(data.pop("switch", {}) or {})
    sw: dict[str, Any] = {}
    switch_fields: tuple[tuple[str, type], ...] = (
        ("backend", str),
        ("bridge", str),
        ("create_bridge", bool),
        ("ovs_vsctl", str),
        ("ovsdb", str),
        ("ovs_rundir", str),
        ("timeout_s", float),
    )
    for key, kind in switch_fields:
        if key in sw_raw:
            sw[key] = _take(sw_raw, key, kind, path, "switch.")
    if "static_sockets" in sw_raw:
        sockets = sw_raw.pop("static_sockets")
        if not isinstance(sockets, list) or not all(isinstance(s, str) for s in sockets):
            raise ConfigError(path=path, reason="switch.static_sockets must be a list of paths")
        if len(set(sockets)) != len(sockets):
            raise ConfigError(path=path, reason="switch.static_sockets lists a socket twice")
        for sock in sockets:
            if not os.path.isabs(sock) or len(sock.encode()) >= 108:
                raise ConfigError(path=path, reason=f"static socket {sock!r} must be an absolute path under 108 bytes")
        sw["static_sockets"] = tuple(sockets)
    _no_leftovers(sw_raw, path, "switch.")
    switch = SwitchConfig(**sw)
    if switch.backend not in BACKENDS:
        raise ConfigError(path=path, reason=f"switch.backend must be one of {', '.join(BACKENDS)}, got {switch.backend!r}")
    if not (0 < len(switch.bridge) <= 15 and set(switch.bridge) <= NAME_CHARS and switch.bridge[0] != "-"):
        raise ConfigError(path=path, reason=f"switch.bridge {switch.bridge!r} is not a valid bridge name")
    if switch.backend == "ovs" and not os.path.isabs(switch.ovs_vsctl):
        raise ConfigError(path=path, reason="switch.ovs_vsctl must be an absolute path")
    if switch.backend == "static" and not switch.static_sockets:
        raise ConfigError(path=path, reason="switch.backend static needs switch.static_sockets")
    if not 0 < switch.timeout_s <= 120:
        raise ConfigError(path=path, reason="switch.timeout_s must be in (0, 120]")

    lim_raw = dict(data.pop("limits", {}) or {})
    lim: dict[str, Any] = {}
    for key in ("max_cpus", "max_ports", "max_queues"):
        if key in lim_raw:
            lim[key] = _take(lim_raw, key, int, path, "limits.")
            if not 0 <= lim[key] <= 1024:
                raise ConfigError(path=path, reason=f"limits.{key} must be within 0..1024")
    if "max_hugepages" in lim_raw:
        try:
            lim["max_hugepages_kib"] = parse_size_kib(_take(lim_raw, "max_hugepages", str, path, "limits."))
        except ValueError as exc:
            raise ConfigError(path=path, reason=f"limits.max_hugepages: {exc}") from exc
    _no_leftovers(lim_raw, path, "limits.")

    policy, anti_spoofing = _policy(dict(data.pop("policy", {}) or {}), switch.bridge, path)
    scope = sha256(os.path.abspath(top.get("state_dir", Config.state_dir)).encode()).hexdigest()[:12]
    switch = replace(switch, scope=scope, bridges=tuple(p.name for p in policy), anti_spoofing=anti_spoofing)

    link_allow = _links(dict(data.pop("links", {}) or {}), path)

    _no_leftovers(data, path, "")
    return Config(
        link_allow=link_allow,
        policy=policy,
        path=path,
        cpu_pool=pool,
        reserved_cpus=reserved,
        switch=switch,
        limits=Limits(**lim),
        **top,
        **hp,
    )


def _policy(raw: dict[str, Any], default_bridge: str, path: str) -> tuple[tuple[BridgePolicy, ...], bool]:
    """The ``policy`` block: per-bridge rules, and whether anti-spoofing rules are installed."""
    anti_spoofing = _take(raw, "anti_spoofing", bool, path, "policy.") if "anti_spoofing" in raw else True
    blocks = raw.pop("bridge", None)
    _no_leftovers(raw, path, "policy.")
    if blocks is None:
        return (BridgePolicy(default_bridge),), anti_spoofing
    items: list[tuple[str, Any]] = []
    for block in blocks if isinstance(blocks, list) else [blocks]:
        if not isinstance(block, dict):
            raise ConfigError(path=path, reason='policy.bridge must be blocks like bridge "br-dpdk" { ... }')
        items += list(block.items())
    policies: list[BridgePolicy] = []
    for label, body in items:
        name = label[1:-1] if len(label) >= 2 and label[0] == label[-1] == '"' else label
        where = f"policy.bridge.{name}."
        if not (0 < len(name) <= 15 and set(name) <= NAME_CHARS and name[0] not in "-."):
            raise ConfigError(path=path, reason=f"policy bridge {name!r} is not a valid bridge name")
        if any(p.name == name for p in policies):
            raise ConfigError(path=path, reason=f"policy bridge {name!r} is given twice")
        body = dict(body or {})
        fields: dict[str, Any] = {}
        for key in ("vlan_required", "allow_mac", "allow_addresses"):
            if key in body:
                fields[key] = _take(body, key, bool, path, where)
        if "vlans" in body:
            try:
                vlans = parse_cpulist(_take(body, "vlans", str, path, where))  # the same range syntax
            except ValueError as exc:
                raise ConfigError(path=path, reason=f"{where}vlans: {exc}") from exc
            if not vlans <= frozenset(range(0, 4095)):
                raise ConfigError(path=path, reason=f"{where}vlans must be within 0..4094")
            fields["vlans"] = vlans
        _no_leftovers(body, path, where)
        if fields.get("vlan_required") and not fields.get("vlans", True):
            raise ConfigError(path=path, reason=f"{where}vlan_required with no allowed vlans refuses every port")
        policies.append(BridgePolicy(name, **fields))
    if not policies:
        raise ConfigError(path=path, reason="policy names no bridge: containers could use none")
    return tuple(policies), anti_spoofing


def _links(raw: dict[str, Any], path: str) -> tuple[str, ...]:
    """The ``links`` block: which link names containers outside a pod may use."""
    allow = raw.pop("allow", [])
    _no_leftovers(raw, path, "links.")
    if not isinstance(allow, list) or not all(isinstance(p, str) for p in allow):
        raise ConfigError(path=path, reason='links.allow must be a list of names or prefixes like ["demo-*"]')
    for pattern in allow:
        stem = pattern[:-1] if pattern.endswith("*") else pattern
        if not (len(stem) <= 15 and set(stem) <= NAME_CHARS and stem[:1] not in ("-", ".")) or (not stem and pattern != "*"):
            raise ConfigError(path=path, reason=f"links.allow: {pattern!r} is not a link name or a prefix ending in '*'")
    return tuple(allow)


def _cache_path(path: str) -> str:

    digest = sha256(os.path.abspath(path).encode()).hexdigest()[:16]
    root = os.environ.get("DPDK_OCI_HOOK_CACHE_DIR") or "/run/dpdk-oci-hook-cache"
    return os.path.join(root, f"config-{digest}.json")


def _identity(st: os.stat_result) -> list[int]:
    return [CACHE_FORMAT, st.st_dev, st.st_ino, st.st_size, st.st_mtime_ns]


def load(path: str | None = None, use_cache: bool = True) -> Config:
    """Load the config at ``path`` (default: env or /etc), through the JSON cache."""
    path = path or config_path()
    try:
        fd = os.open(path, os.O_RDONLY | os.O_CLOEXEC)
    except OSError as exc:
        raise ConfigError(path=path, reason=exc.strerror or str(exc)) from exc
    try:
        st = os.fstat(fd)
        cache = _cache_path(path)
        if use_cache:
            try:
                with open(cache, encoding="utf-8") as fh:
                    cached = json.load(fh)
                if cached.get("identity") == _identity(st):
                    return Config.from_json(cached["config"])
            except (OSError, ValueError, KeyError, TypeError):
                pass
        with os.fdopen(os.dup(fd), encoding="utf-8") as fh:
            text = fh.read(1 << 20)
    finally:
        os.close(fd)
    config = validate(parse_hcl(text, path), path)
    if use_cache:
        _write_cache(cache, {"identity": _identity(st), "config": config.to_json()})
    return config


def _write_cache(cache: str, payload: dict[str, Any]) -> None:
    """Best effort: a cache that cannot be written only costs speed."""
    try:
        os.makedirs(os.path.dirname(cache), mode=0o700, exist_ok=True)
        from hook.host.fsutil import replace_file

        replace_file(cache, json.dumps(payload).encode(), 0o600, durable=False)
    except OSError:
        pass
