"""table.md and chart.png from the scenarios' sections."""

from __future__ import annotations

import math
from pathlib import Path
from typing import Any

from tests.bench.common import Section, fmt


def md_table(header: list[str], rows: list[list[str]]) -> str:
    lines = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    lines += ["| " + " | ".join(str(c) for c in row) + " |" for row in rows]
    return "\n".join(lines)


def write_table(path: Path, meta: dict[str, Any], sections: list[Section]) -> str:
    host = meta["host"]
    assert isinstance(host, dict)
    parts = [
        "# dpdk-oci-hook benchmark",
        "",
        f"{meta['started']}, {'quick' if meta['quick'] else 'full'} run, {meta.get('seconds', '?')} s. "
        f"Host: {host['cpus']} vCPUs, kernel {host['kernel']}, Debian {host['debian']}, {host['runc']}, DPDK {host['dpdk']}, "
        f"{host['ovs']}, Python {host['python']}. Load average at start {host['loadavg_start']}, at end {meta.get('loadavg_end')}.",
        "",
    ]
    others = host.get("other_pollers_at_start") or []
    if others:
        parts += [f"Other DPDK processes were running at the start: {', '.join(others)}.", ""]
    targets = [t for s in sections for t in s.targets]
    if targets:
        rows = []
        for t in targets:
            met = {True: "met", False: "**not met**", None: "n/a"}[t.met]
            value = fmt(t.value, 2) if t.value is not None else "-"
            rows.append([t.what, f"{value} {t.unit}", f"{t.op} {t.limit:g} {t.unit}", met, t.note])
        met_count = sum(1 for t in targets if t.met)
        parts += ["## Targets", "", f"{met_count} of {len(targets)} met on this run.", "",
                  md_table(["target", "measured", "limit", "", "detail"], rows), ""]
    for s in sections:
        parts += [f"## {s.title}", ""]
        if s.error:
            parts += [f"**failed:** {s.error}", ""]
        for caption, header, rows in s.tables:
            parts += [f"{caption}:", "", md_table(header, rows), ""]
        for note in s.notes:
            parts += [f"- {note}"]
        if s.notes:
            parts.append("")
        parts += [f"_{s.seconds:.0f} s_", ""]
    clean = meta.get("host_clean")
    left = meta.get("leftovers") or []
    assert isinstance(left, list)
    parts += ["## Host", "", "Left clean: " + ("yes" if clean else "**no**: " + "; ".join(str(x) for x in left)), ""]
    text = "\n".join(parts)
    path.write_text(text)
    return text


def _num(v: Any) -> float:
    return float("nan") if v is None else float(v)


def _bar(ax: Any, labels: list[str], values: list[Any], errs: list[Any] | None, title: str, unit: str, log: bool = False) -> None:
    values = [_num(v) for v in values]
    upper = None if errs is None else [0.0 if math.isnan(_num(e)) else _num(e) for e in errs]
    ys = range(len(labels))
    xerr = None if upper is None else [[0.0] * len(upper), upper]  # one-sided: from the median up
    ax.barh(list(ys), values, xerr=xerr, color="#4c72b0", ecolor="#333333", capsize=3)
    ax.set_yticks(list(ys))
    ax.set_yticklabels(labels, fontsize=7)
    ax.invert_yaxis()
    ax.set_title(title, fontsize=9)
    ax.set_xlabel(unit, fontsize=8)
    if log:
        ax.set_xscale("log")
    for y, v in zip(ys, values, strict=True):
        if not math.isnan(v):
            ax.text(v, y, f" {v:.3g}", va="center", fontsize=6)


def write_chart(path: Path, sections: list[Section]) -> bool:
    try:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:
        return False
    by = {s.name: s for s in sections if not s.error}
    panels = [name for name in ("start", "phases", "concurrency", "ports", "memory", "datapath") if name in by]
    if not panels:
        return False
    extra = 1 if "datapath" in by else 0
    n = len(panels) + extra
    cols = 2 if n > 1 else 1
    rows = math.ceil(n / cols)
    fig, axes = plt.subplots(rows, cols, figsize=(7.5 * cols, 3.6 * rows), squeeze=False)
    flat = [ax for row in axes for ax in row]
    i = 0
    for name in panels:
        ax = flat[i]
        i += 1
        data = by[name].data
        if name == "start":
            stats = data["stats_ms"]
            labels = [k for k in stats if k.startswith("runc: ") or "python -I -c pass" in k or "fast path" in k]
            med = [stats[k]["median"] for k in labels]
            err = [max(stats[k]["p95"] - stats[k]["median"], 0.0) for k in labels]
            _bar(ax, [k.replace("runc: ", "runc ").replace("spawn: ", "") for k in labels], med, err,
                 "Container start / hook process: median, bar to p95", "ms")
        elif name == "phases":
            bd = data["breakdown_ms"]
            cols_ = [c for c in bd if c.startswith("createRuntime")] + [c for c in bd if c.startswith("poststop")]
            phases = [p for p in ("interpreter start", "imports", "parse", "config", "ledger", "ledger write+fsync", "allocate+plan",
                                  "socket dir", "mounts", "switch", "cgroups", "log", "other") if any(p in bd[c] for c in cols_)]
            left = [0.0] * len(cols_)
            cmap = plt.get_cmap("tab20")
            for j, p in enumerate(phases):
                vals = [bd[c].get(p, 0.0) for c in cols_]
                ax.barh(range(len(cols_)), vals, left=left, label=p, color=cmap(j % 20))
                left = [a + v for a, v in zip(left, vals, strict=True)]
            ax.set_yticks(range(len(cols_)))
            ax.set_yticklabels(cols_, fontsize=7)
            ax.invert_yaxis()
            ax.legend(fontsize=6, ncol=3, loc="lower right")
            ax.set_title("One hook process by phase (medians)", fontsize=9)
            ax.set_xlabel("ms", fontsize=8)
        elif name == "concurrency":
            ks = data["ks"]
            styles = ("o-", "^-.", "s--", "d:", "v-", "x--")
            for kind, style in zip(data["kinds"], styles, strict=False):
                med = [data["batches"][f"{kind} K={k}"]["running_ms"]["median"] for k in ks]
                p95 = [data["batches"][f"{kind} K={k}"]["running_ms"]["p95"] for k in ks]
                ax.plot(ks, med, style, label=f"{kind}: median per container")
                ax.plot(ks, p95, style, alpha=0.35, label=f"{kind}: p95")
            ax.set_xscale("log", base=2)
            ax.set_xticks(ks)
            ax.set_xticklabels([str(k) for k in ks])
            ax.set_xlabel("containers started at once (K)", fontsize=8)
            ax.set_ylabel("ms to running", fontsize=8)
            ax.set_title(f"K at once; ledger lock held p99 {fmt(data['lock_held_ms']['p99'], 2)} ms", fontsize=9)
            ax.legend(fontsize=6)
        elif name == "ports":
            idx = list(range(1, len(data["per_add"]) + 1))
            for key, label in (("switch_ms", "hook: OVS add (probe)"), ("ledger_ms", "hook: ledger"), ("stage_ms", "hook: createRuntime stage"),
                               ("vsctl_ms", "bare ovs-vsctl add-port")):
                ax.plot(idx, [r.get(key) for r in data["per_add"]], ".-", ms=3, lw=0.8, label=label)
            ax.set_xlabel("port number (containers already running = n-1)", fontsize=8)
            ax.set_ylabel("ms (log)", fontsize=8)
            ax.set_yscale("log")
            ax.set_title("Ports added one after another", fontsize=9)
            ax.legend(fontsize=6)
        elif name == "memory":
            stats = data["stats_kib"]
            labels = list(stats)
            _bar(ax, labels, [stats[k]["median"] / 1024 for k in labels], None, "Peak RSS (ru_maxrss, median)", "MiB")
        elif name == "datapath":
            rows_ = data["throughput_rows"]
            labels = [f"{r['variant']} {r['frame']}B" for r in rows_]
            _bar(ax, labels, [r["mpps_median"] for r in rows_], [max(r["mpps_p95"] - r["mpps_median"], 0) if r["mpps_p95"] else 0 for r in rows_],
                 "Packets per second at the receiver (median of rounds)", "Mpps", log=True)
            ax = flat[i]
            i += 1
            lat = data["latency_rows"]
            labels = [f"{r['variant']} {r['frame']}B" for r in lat]
            _bar(ax, labels, [r["p50_us"] for r in lat], [max((r["p99_us"] or 0) - (r["p50_us"] or 0), 0) for r in lat],
                 "Round trip, one packet in flight: median, bar to p99", "µs", log=True)
    for ax in flat[i:]:
        ax.axis("off")
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return True
