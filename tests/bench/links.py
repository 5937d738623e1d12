"""Scenario 12: a direct link against the same container pair through OVS-DPDK.

At most two busy pollers at a time (2 vCPUs), and OVS's PMD is one of them, so every
variant is "one container sends and receives on core 0, the other end reflects on core 1":

* link, reflected: container S (core 0) runs testpmd ``flowgen`` on its link port; the
  link's other side, container R (core 1), runs testpmd ``macswap`` and sends every frame
  back.  Rate = S's RX-packets growth (each frame crossed the link twice).
* through OVS, reflected: container S' (core 0, one vhost-user port on a private OVS-DPDK
  bridge whose PMD is on core 1) runs ``flowgen``; an OpenFlow rule sends every frame back
  out of its input port.  Rate = S''s RX-packets growth (each frame crossed the switch
  twice), as in the datapath scenario.  R stops forwarding meanwhile.
* link, one way: S ``txonly`` -> R ``rxonly``; rate = R's RX-packets growth (what a pair
  gets when no switch or reflector sits in the path).

The variants take turns (A B C, B C A, ...) at 64 and 1518 B; the OVS PMD sleeps when idle
(pmd-maxsleep) outside its turns.  Latency with one packet in flight: ``pingpong`` in a
container that joins R's link (R reflects with macswap) or sits on the OVS bridge (OVS
reflects), runs alternating.  Containers get no ``cpus`` annotation (the two senders share
core 0 and never poll at the same time): their lcores are given on the command line.
"""

from __future__ import annotations

import json
import subprocess
import time
from typing import Any

from hook.admin.demo import TESTPMD
from tests.bench.common import CONTAINER_IDS, RUNC, Bench, P, Section, Target, bundle, fmt, hook_entry, median, runc
from tests.bench.datapath import FRAMES, Testpmd, add_pingpong, build_pingpong, measure
from tests.bench.start import start_ovs

LINK = "bench-link"
VLINK = "bench-vlink"
LINK_RX = "link, reflected by the peer"
OVS = "through OVS, reflected by the switch"
LINK_ONEWAY = "link, one way (txonly -> rxonly)"
VLINK_RX = "virtio link, reflected by the peer"
VARIANTS = (LINK_RX, OVS, LINK_ONEWAY, VLINK_RX)


def testpmd_on(core: int) -> list[str]:
    """testpmd with the hook's EAL arguments, its main and forwarding lcores on ``core``."""
    script = (f"exec /usr/bin/stdbuf -oL {TESTPMD} $(cat /run/dpdk/eal.args) --lcores 0@{core},1@{core} --main-lcore 0 "
              "--iova-mode=va -- -i --total-num-mbufs=4096")
    return ["/bin/sh", "-c", script]


def run_pingpong(root: str, bundle_path: str, cid: str, reflector: Testpmd | None) -> tuple[str, str]:
    """Run a pingpong container to its end; (stdout, stderr).

    ``reflector`` (the link's peer; None through OVS) forwards only for this run, so no other
    poller shares its core.  pingpong holds its port open after its results until its stdin
    ends: the peer stops forwarding in between, since DPDK 22.11's memif can crash a side that
    polls while its other side closes.
    """
    CONTAINER_IDS.add(cid)
    if reflector is not None:
        reflector.cmd("set fwd macswap")
        reflector.cmd("start")
    proc = subprocess.Popen([RUNC, "--root", root, "run", "--bundle", bundle_path, cid], stdin=subprocess.PIPE,
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    assert proc.stdin is not None and proc.stdout is not None
    out: list[str] = []
    try:
        for line in proc.stdout:
            out.append(line)
            if line.startswith("pingpong: done"):
                break
    finally:
        if reflector is not None:
            reflector.stop_fwd()
    try:
        proc.stdin.close()
        rest = proc.stdout.read()  # what it prints while closing (its stderr is EAL's few lines)
        err = proc.stderr.read() if proc.stderr is not None else ""
        proc.wait(timeout=120)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
    return "".join(out) + rest, err


def run_links(b: Bench) -> Section:
    sec = Section("links", "Direct link vs through OVS-DPDK for one container pair (scenario 12)")
    reps = 2 if b.quick else 6
    window = 1.0 if b.quick else 2.0
    warm = 0.5
    pings = 20000 if b.quick else 100000
    lat_reps = 1 if b.quick else 2
    through: dict[str, dict[int, list[dict[str, float]]]] = {}
    latency: dict[str, dict[int, list[dict[str, Any]]]] = {}
    notes: list[str] = []

    ovs = start_ovs(b)
    env = b.hook_env("links-ovs", ovs_db=ovs.db, ovs_rundir=ovs.rundir, bridge="br-link", pool="0-1", reserved="", budget="1Gi")
    with open(env.config_path, "a", encoding="utf-8") as fh:
        # no anti-spoofing rules: the one reflecting rule below must apply to every port, also
        # to the pingpong containers' ports made after it
        fh.write('links {\n  allow = ["bench-*"]\n}\npolicy {\n  anti_spoofing = false\n}\n')
    cache = str(env.root / "cache")
    hooks = {stage: [hook_entry(stage, env.config_path, cache)] for stage in ("createRuntime", "poststop")}
    mgmt = f"unix:{ovs.rundir}/br-link.mgmt"
    root = b.runc_root("runc-links")
    bdir = b.dir("bundles-links")
    link_ann = {P + "link": LINK, P + "hugepages": "64Mi"}
    # virtio mode: the first side (virtio_user, server) waits in EAL init for the second (net_vhost)
    vlink_ann = {P + "link": json.dumps([{"name": VLINK, "mode": "virtio"}]), P + "hugepages": "64Mi"}
    ovs_ann = {P + "vhost-user": "1", P + "hugepages": "64Mi"}

    def pmd_sleep(us: int) -> None:
        ovs.vsctl("set", "Open_vSwitch", ".", f"other_config:pmd-maxsleep={us}", wait=False)

    def record(variant: str, frame: int, value: dict[str, float]) -> None:
        through.setdefault(variant, {}).setdefault(frame, []).append(value)
        b.say(f"links: {variant} {frame}B: {value.get('rx_pps', 0) / 1e6:.3f} Mpps at the receiver")

    # R first: it takes the link's server side; S joins as client.
    peer = Testpmd.container(root, bundle(bdir / "r", testpmd_on(1), link_ann, hooks), "lkpeer")
    b.on_cleanup("link peer", peer.quit)
    peer.wait_for("testpmd> ", timeout_s=60)
    sender = Testpmd.container(root, bundle(bdir / "s", testpmd_on(0), link_ann, hooks), "lksend")
    b.on_cleanup("link sender", sender.quit)
    sender.wait_for("testpmd> ", timeout_s=60)
    # the virtio pair: S' (virtio_user: no copies on the sending core, as through OVS) first
    vsender = Testpmd.container(root, bundle(bdir / "vs", testpmd_on(0), vlink_ann, hooks), "lkvsend")
    b.on_cleanup("virtio link sender", vsender.quit)
    deadline = time.monotonic() + 30
    while "lkvsend" not in env.ledger() and time.monotonic() < deadline:
        time.sleep(0.05)
    vpeer = Testpmd.container(root, bundle(bdir / "vr", testpmd_on(1), vlink_ann, hooks), "lkvpeer")
    b.on_cleanup("virtio link peer", vpeer.quit)
    vsender.wait_for("testpmd> ", timeout_s=60)
    vpeer.wait_for("testpmd> ", timeout_s=60)
    via_ovs = Testpmd.container(root, bundle(bdir / "o", testpmd_on(0), ovs_ann, hooks), "lkovs")
    b.on_cleanup("OVS sender", via_ovs.quit)
    via_ovs.wait_for("testpmd> ", timeout_s=60)
    roles = {cid: entry["links"][0]["role"] for cid, entry in env.ledger().items() if entry.get("links")}  # type: ignore[union-attr,index]
    ovs_port = env.ledger()["lkovs"]["ports"][0]["name"]  # type: ignore[index]
    if set(ovs.vsctl("list-ports", "br-link", wait=False).split()) != {ovs_port}:
        raise RuntimeError("the bridge holds other ports than the OVS sender's: the link made a switch port")
    # every frame goes back out of the port it came in on
    subprocess.run(["ovs-ofctl", "del-flows", mgmt], check=True, capture_output=True, timeout=30)
    subprocess.run(["ovs-ofctl", "add-flow", mgmt, "priority=10,actions=in_port"], check=True, capture_output=True, timeout=30)
    deadline = time.monotonic() + 15
    while time.monotonic() < deadline and ovs.vsctl("get", "Interface", ovs_port, "link_state", wait=False).strip() != "up":
        time.sleep(0.2)
    time.sleep(1.0)
    b.say(f"links: roles {roles}; {', '.join(VARIANTS)}; {reps} turns each per frame size, {window:g} s windows")

    for frame, length, _ in FRAMES:
        for tp in (sender, via_ovs, vsender):
            tp.cmd(f"set txpkts {length}")
        for rep in range(reps):
            for variant in VARIANTS[rep % len(VARIANTS):] + VARIANTS[:rep % len(VARIANTS)]:
                if variant == OVS:
                    via_ovs.cmd(f"set txpkts {frame}")  # flowgen takes 4 bytes off for the FCS
                    via_ovs.cmd("set fwd flowgen")
                    pmd_sleep(0)
                    via_ovs.cmd("start")
                    try:
                        record(variant, frame, measure(via_ovs, via_ovs, window, warm))
                    finally:
                        via_ovs.stop_fwd()
                        pmd_sleep(10000)
                    continue
                tx, other = (vsender, vpeer) if variant == VLINK_RX else (sender, peer)
                reflected = variant in (LINK_RX, VLINK_RX)
                if reflected:
                    tx.cmd(f"set txpkts {frame}")
                    tx.cmd("set fwd flowgen")
                    other.cmd("set fwd macswap")
                else:
                    tx.cmd(f"set txpkts {length}")
                    tx.cmd("set fwd txonly")
                    other.cmd("set fwd rxonly")
                other.cmd("start")
                tx.cmd("start")
                try:
                    record(variant, frame, measure(tx if reflected else other, tx, window, warm))
                finally:
                    tx.stop_fwd()
                    other.stop_fwd()
    sender.quit()  # the link's client side is free for the pingpong containers
    via_ovs.quit()
    vsender.quit()  # the virtio link's server side is free: a pingpong container takes it, vpeer reconnects

    pp_dir, why = build_pingpong(b)
    if pp_dir is None:
        notes.append(f"latency not measured: {why}")
    else:
        b.say("links: latency, one packet in flight (pingpong; the link's peer or OVS reflects)")
        pp_mount = [{"destination": "/bench", "type": "bind", "source": pp_dir, "options": ["rbind", "ro"]}]
        pp_args = f"-- --sizes {','.join(str(f[1]) for f in FRAMES)} --count {pings} --hold-stdin"
        script = f"exec /bench/pingpong $(cat /run/dpdk/eal.args) --lcores 0@0 --main-lcore 0 --iova-mode=va {pp_args}"
        pp_bundles = {LINK_RX: bundle(bdir / "pp-link", ["/bin/sh", "-c", script], link_ann, hooks, extra_mounts=pp_mount),
                      OVS: bundle(bdir / "pp-ovs", ["/bin/sh", "-c", script], ovs_ann, hooks, extra_mounts=pp_mount),
                      VLINK_RX: bundle(bdir / "pp-vlink", ["/bin/sh", "-c", script], vlink_ann, hooks, extra_mounts=pp_mount)}
        # each pingpong run starts and stops its own reflector (run_pingpong)
        for rep in range(lat_reps):
            order = (LINK_RX, OVS, VLINK_RX)
            for variant in order[rep % 3:] + order[:rep % 3]:
                cid = f"lkpp{rep}{ {LINK_RX: 'l', OVS: 'o', VLINK_RX: 'v'}[variant] }"
                if variant == OVS:
                    pmd_sleep(0)
                reflector = {LINK_RX: peer, VLINK_RX: vpeer}.get(variant)
                try:
                    out, err = run_pingpong(root, pp_bundles[variant], cid, reflector)
                finally:
                    pmd_sleep(10000)
                    runc(root, "delete", "--force", cid)
                add_pingpong(latency, notes, variant, out, err)
    peer.quit()
    vpeer.quit()

    # ---- results -------------------------------------------------------------------------
    rows, trows = [], []
    med: dict[tuple[str, int], float] = {}
    for variant in VARIANTS:
        for frame, vals in sorted(through.get(variant, {}).items()):
            rx = [v.get("rx_pps", float("nan")) for v in vals]
            tx = [v.get("tx_pps", float("nan")) for v in vals]
            med[(variant, frame)] = median(rx)
            trows.append({"variant": variant, "frame": frame, "mpps_median": median(rx) / 1e6, "mpps_min": min(rx) / 1e6,
                          "mpps_max": max(rx) / 1e6, "tx_mpps_median": median(tx) / 1e6, "windows": len(vals)})
            rows.append([variant, str(frame), fmt(median(rx) / 1e6, 3), fmt(min(rx) / 1e6, 3), fmt(max(rx) / 1e6, 3),
                         fmt(median(tx) / 1e6, 3), str(len(vals))])
    sec.table(f"Packets per second at the receiver (Mpps; {window:g} s windows, variants alternate, {reps} turns each)",
              ["path", "frame B", "rx median", "rx min", "rx max", "sender tx median", "windows"], rows)
    lrows, lat_rows = [], []
    for variant, by_frame in latency.items():
        for frame, runs in sorted(by_frame.items()):
            p50 = median([r.get("p50_ns", 0) / 1000.0 for r in runs])
            p99 = median([r.get("p99_ns", 0) / 1000.0 for r in runs])
            mn = min(r.get("min_ns", 0) / 1000.0 for r in runs)
            lat_rows.append({"variant": variant, "frame": frame, "p50_us": p50, "p99_us": p99, "min_us": mn})
            lrows.append([variant, str(frame), fmt(mn, 2), fmt(p50, 2), fmt(p99, 2), str(sum(int(r.get("count") or 0) for r in runs)),
                          str(sum(int(r.get("lost") or 0) for r in runs))])
    if lrows:
        sec.table("Round trip with one packet in flight (µs; pingpong.c, medians over runs)",
                  ["path", "frame B", "min", "median", "p99", "samples", "lost"], lrows)
    sec.notes.append("Reflected variants: one container sends and receives on core 0; the other end (the link's peer container, "
                     "or OVS's PMD) reflects on core 1: two busy pollers each.  One way: sender core 0, receiver core 1.")
    sec.notes.append("'link' is memif (the default mode); 'virtio link' is the virtio_user (sender) / net_vhost (peer) pair; "
                     "the hook made no switch port for either (checked on the bridge).")
    sec.notes += notes
    sec.data = {"throughput": through, "throughput_rows": trows, "latency": latency, "latency_rows": lat_rows, "roles": roles,
                "window_s": window, "turns": reps}
    def turn_ratios(variant: str, frame: int) -> list[float]:
        """variant / through OVS for each turn (the variants of a turn ran back to back, under the same load)."""
        mine = [v.get("rx_pps", float("nan")) for v in through.get(variant, {}).get(frame, [])]
        ref = [v.get("rx_pps", float("nan")) for v in through.get(OVS, {}).get(frame, [])]
        return [m / r for m, r in zip(mine, ref, strict=False) if r > 0]

    ratios = {v: {f: median(turn_ratios(v, f)) for f, _, _ in FRAMES} for v in (LINK_RX, LINK_ONEWAY, VLINK_RX)}
    sec.data["ratios_to_ovs"] = ratios
    link64, ovs64 = med.get((LINK_RX, 64), float("nan")), med.get((OVS, 64), float("nan"))
    sec.targets.append(Target("link_vs_ovs", "link / through OVS, 64 B, packets per second at the receiver (both reflected; "
                                             "median of per-turn ratios)", ratios[LINK_RX][64], 2.0, "x", ">=",
                              note=f"medians: link {fmt(link64 / 1e6, 3)} Mpps vs OVS {fmt(ovs64 / 1e6, 3)} Mpps; link one way / OVS "
                                   f"{fmt(ratios[LINK_ONEWAY][64], 2)}x at 64 B, {fmt(ratios[LINK_ONEWAY][1518], 2)}x at 1518 B; "
                                   f"virtio link reflected / OVS {fmt(ratios[VLINK_RX][64], 2)}x at 64 B"))
    lat = {v: {r["frame"]: r["p50_us"] for r in lat_rows if r["variant"] == v} for v in (LINK_RX, OVS, VLINK_RX)}
    if lat[LINK_RX].get(64) and lat[OVS].get(64):
        sec.targets.append(Target("link_latency_vs_ovs", "link / through OVS, 64 B, median round trip with one packet in flight",
                                  lat[LINK_RX][64] / lat[OVS][64], 1.0, "x", "<=",
                                  note=f"link {fmt(lat[LINK_RX][64], 2)} µs vs OVS {fmt(lat[OVS][64], 2)} µs; virtio link "
                                       f"{fmt(lat[VLINK_RX].get(64, float('nan')), 2)} µs"))
    return sec
