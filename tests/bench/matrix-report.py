#!/usr/bin/env python3
"""The table and the charts of a `matrix.sh` run, from its CSV.

    matrix-report.py table FILE.csv          a Markdown table, raftd beside etcd, with ratios
    matrix-report.py plot FILE.csv DIR       one SVG per (mode, value, members) in DIR:
                                             throughput and p99 against clients, both systems

Rows come from `compare.sh` (CSV=...): system, mode, value_bytes, members, clients, dur_s,
ops_per_s, mb_per_s, p50_ms, p99_ms, errors, cpu_us_per_op, load_start, load_end. A point
run twice keeps its last row.
"""
import csv
import os
import sys


def load(path):
    rows = {}
    with open(path) as f:
        for r in csv.DictReader(f):
            key = (r["mode"], int(r["value_bytes"]), int(r["members"]), int(r["clients"]), r["system"])
            rows[key] = r
    return rows


def num(r, field):
    try:
        return float(r[field]) if r and r[field] != "" else None
    except ValueError:
        return None


def fmt(x, digits=0):
    return "—" if x is None else f"{x:,.{digits}f}"


def ratio(a, b, digits=2):
    return "—" if a is None or b is None or b == 0 else f"{a / b:.{digits}f}×"


def groups(rows):
    return sorted({k[:3] for k in rows}, key=lambda g: (["write", "read", "mixed"].index(g[0]), g[1], g[2]))


def table(path):
    rows = load(path)
    print("| mode | value | nodes | clients | raftd ops/s | etcd ops/s | ratio | raftd MB/s | etcd MB/s "
          "| raftd p50 / p99 ms | etcd p50 / p99 ms | raftd CPU µs/op | etcd CPU µs/op | CPU ratio | load |")
    print("|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---|")
    for mode, value, members in groups(rows):
        clients = sorted({k[3] for k in rows if k[:3] == (mode, value, members)})
        for c in clients:
            o = rows.get((mode, value, members, c, "raftd"))
            t = rows.get((mode, value, members, c, "etcd"))
            loads = "/".join(f"{num(r, 'load_start'):.1f}→{num(r, 'load_end'):.1f}" for r in (o, t) if r and num(r, "load_start") is not None)
            print(f"| {mode} | {value} | {members} | {c} | {fmt(num(o, 'ops_per_s'))} | {fmt(num(t, 'ops_per_s'))} "
                  f"| {ratio(num(o, 'ops_per_s'), num(t, 'ops_per_s'))} "
                  f"| {fmt(num(o, 'mb_per_s'), 2)} | {fmt(num(t, 'mb_per_s'), 2)} "
                  f"| {fmt(num(o, 'p50_ms'), 2)} / {fmt(num(o, 'p99_ms'), 2)} "
                  f"| {fmt(num(t, 'p50_ms'), 2)} / {fmt(num(t, 'p99_ms'), 2)} "
                  f"| {fmt(num(o, 'cpu_us_per_op'), 1)} | {fmt(num(t, 'cpu_us_per_op'), 1)} "
                  f"| {ratio(num(t, 'cpu_us_per_op'), num(o, 'cpu_us_per_op'), 1)} | {loads} |")
    print()
    print("ratio: raftd ops/s over etcd's; CPU ratio: etcd's CPU per operation over raftd's (all nodes, "
          "warm-up included); load: the 1-minute load average at the start and end of each side "
          "(raftd/etcd) of the group — the machine has 2 cores, so high figures mean noisy points.")


def plot(path, out_dir):
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    rows = load(path)
    stamp = os.path.splitext(os.path.basename(path))[0]
    for mode, value, members in groups(rows):
        fig, (ax_ops, ax_p99) = plt.subplots(1, 2, figsize=(10, 4))
        for system, style in (("raftd", "o-"), ("etcd", "s--")):
            points = sorted(
                (k[3], rows[k]) for k in rows if k[:3] == (mode, value, members) and k[4] == system
            )
            points = [(c, r) for c, r in points if num(r, "ops_per_s") is not None]
            if not points:
                continue
            xs = [c for c, _ in points]
            ax_ops.plot(xs, [num(r, "ops_per_s") for _, r in points], style, label=system)
            ax_p99.plot(xs, [num(r, "p99_ms") for _, r in points], style, label=system)
        ticks = sorted({k[3] for k in rows if k[:3] == (mode, value, members)})
        for ax, title in ((ax_ops, "throughput (ops/s)"), (ax_p99, "p99 latency (ms)")):
            ax.set_xscale("log", base=2)
            ax.set_xticks(ticks, [str(t) for t in ticks])
            ax.minorticks_off()
            ax.set_yscale("log")
            ax.set_xlabel("closed-loop clients")
            ax.set_title(title)
            ax.grid(True, which="both", alpha=0.3)
            ax.legend()
        fig.suptitle(f"{mode}, {value} B values, {members} nodes each ({stamp}; 2 shared cores, noisy)")
        fig.tight_layout()
        name = os.path.join(out_dir, f"matrix-{mode}-{value}B-{members}n.svg")
        fig.savefig(name)
        plt.close(fig)
        print(f"plot: {name}")


if __name__ == "__main__":
    if len(sys.argv) == 3 and sys.argv[1] == "table":
        table(sys.argv[2])
    elif len(sys.argv) == 4 and sys.argv[1] == "plot":
        plot(sys.argv[2], sys.argv[3])
    else:
        sys.exit("usage: matrix-report.py table FILE.csv | plot FILE.csv DIR")
