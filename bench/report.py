"""Tables and chart of a suite run (bench/suite.py), from its JSON only.

    bench/.venv/bin/python -m bench.report bench/results/suite.json                # print tables
    bench/.venv/bin/python -m bench.report bench/results/suite.json --readme README.md \\
        --png docs/bench.png                                                      # update both

--readme replaces what stands between ``<!-- bench:begin -->`` and ``<!-- bench:end -->`` in
the file with the tables, so README cannot drift from the JSON it names. Every cell is the
median of the runs [min–max]; the ratios are beatq's figure divided by the peer's in the same
repetition, then the median [min–max] of those quotients.
"""

from __future__ import annotations

import argparse
import json
import re
import statistics
import sys
from pathlib import Path

LABELS = {
    "beatq": "beatq",
    "celery": "Celery",
    "huey": "Huey",
    "rq": "RQ",
    "arq": "arq",
    "dramatiq": "Dramatiq",
}
# (label, key, unit, higher is better)
CORE_ROWS = [
    ("1. enqueue, normal API (`delay()`)", "enqueue delay", "tasks/s", True),
    ("1. enqueue, batch API", "enqueue batch", "tasks/s", True),
    ("2. drain, 1 worker process", "drain one", "tasks/s", True),
    ("2. drain, worker defaults", "drain default", "tasks/s", True),
    ("2. drain, best on 2 cores", "drain best", "tasks/s", True),
    ("2. worker peak memory, 1 process", "mem one", "MiB", False),
    ("2. worker peak memory, best on 2 cores", "mem best", "MiB", False),
    ("3. round trip p50, defaults", "rt default p50", "ms", False),
    ("3. round trip p95, defaults", "rt default p95", "ms", False),
    ("3. round trip p99, defaults", "rt default p99", "ms", False),
    ("3. round trip p50, best", "rt best p50", "ms", False),
    ("3. round trip p95, best", "rt best p95", "ms", False),
    ("3. round trip p99, best", "rt best p99", "ms", False),
]
ETA_ROWS = [
    ("lateness p50", "late p50", "ms", False),
    ("lateness p99", "late p99", "ms", False),
    ("lateness max", "late max", "ms", False),
    ("ran / sent", "ran", "tasks", True),
    ("worker RSS while they wait", "rss waiting", "MiB", False),
    ("worker peak RSS", "peak", "MiB", False),
    ("client send time", "send s", "s", False),
]
PRECISION_ROWS = [
    ("lateness p50", "late p50", "ms", False),
    ("lateness p99", "late p99", "ms", False),
    ("lateness max", "late max", "ms", False),
    ("runs / expected", "runs", "", True),
    ("missed runs", "missed", "", False),
    ("doubled runs", "doubled", "", False),
]
SCHED_LABELS = {
    "beatq": "beatq beat",
    "celery": "Celery beat",
    "redbeat": "celery-redbeat",
    "huey": "Huey periodic (minute)",
    "rq": "rq-scheduler",
    "rq tuned": "rq-scheduler `-i 0.1`",
    "arq": "arq cron",
    "arq tuned": "arq cron, poll 0.01 s",
}


CHART_SCHED = {  # * = against the previous run + 1 s (no grid)
    "beatq": "beatq",
    "celery": "Celery\nbeat*",
    "redbeat": "redbeat*",
    "huey": "Huey\n(minute)",
    "rq": "rq-sched.",
    "rq tuned": "rq-sched.\n-i 0.1",
    "arq": "arq cron",
    "arq tuned": "arq cron\npoll .01",
}


def spread(values: list) -> dict | None:
    ok = [v for v in values if v is not None]
    if not ok:
        return None
    return {"median": statistics.median(ok), "min": min(ok), "max": max(ok), "runs": len(ok)}


def ratios(beatq: list, peer: list) -> dict | None:
    return spread([b / p if b is not None and p else None for b, p in zip(beatq, peer)])


def best_setting(runs: list[dict]) -> str | None:
    keys = {k[len("drain ") :] for r in runs for k in r if k.startswith("drain ")}
    medians = {
        k: statistics.median([r[f"drain {k}"] for r in runs if f"drain {k}" in r]) for k in keys
    }
    return max(medians, key=medians.get) if medians else None


def summarise(result: dict) -> dict:
    s = result["samples"]
    out: dict = {}
    if "core" in s:
        core = {}
        for name, runs in s["core"].items():
            best = best_setting(runs)
            for r in runs:
                if best:
                    r["drain best"], r["mem best"] = r.get(f"drain {best}"), r.get(f"mem {best}")
            core[name] = {
                "best": best,
                "figures": {k: spread([r.get(k) for r in runs]) for _, k, _, _ in CORE_ROWS},
            }
            core[name]["partial"] = sorted(
                k[len("done ") :]
                for r in runs
                for k, v in r.items()
                if k.startswith("done ") and v < result["params"]["tasks"] + 1
            )
            if "beatq" in s["core"] and name != "beatq":
                b = s["core"]["beatq"]
                core[name]["ratio"] = {
                    k: ratios([r.get(k) for r in b], [r.get(k) for r in runs])
                    for _, k, _, _ in CORE_ROWS
                }
        out["core"] = core
    if "eta" in s:
        out["eta"] = {}
        for n, systems in s["eta"].items():
            out["eta"][n] = {
                name: {
                    "figures": {k: spread([r.get(k) for r in runs]) for _, k, _, _ in ETA_ROWS},
                    "ratio": None
                    if name == "beatq" or "beatq" not in systems
                    else {
                        k: ratios([r.get(k) for r in systems["beatq"]], [r.get(k) for r in runs])
                        for _, k, _, _ in ETA_ROWS
                    },
                }
                for name, runs in systems.items()
            }
    if "precision" in s:
        p = s["precision"]
        out["precision"] = {
            key: {
                "figures": {k: spread([r.get(k) for r in runs]) for _, k, _, _ in PRECISION_ROWS}
                | {"expected": spread([r.get("expected") for r in runs])},
                "ratio": None  # Celery beat and redbeat: lateness vs their previous run
                if key == "beatq" or "beatq" not in p or key in ("celery", "redbeat")
                else {
                    k: ratios([r.get(k) for r in p["beatq"]], [r.get(k) for r in runs])
                    for _, k, _, _ in PRECISION_ROWS[:3]
                },
            }
            for key, runs in p.items()
        }
    if "scale" in s:
        out["scale"] = {
            n: {
                name: {
                    k: spread([r.get(k) for r in runs])
                    for k in (
                        "startup",
                        "rss",
                        "hwm",
                        "cpu",
                        "rate",
                        "rate slot",
                        "partial rate",
                        "idle late p50",
                        "burst tick late max",
                    )
                }
                | {
                    "burst first late ms": spread(
                        [
                            r["burst first late"] * 1000
                            for r in runs
                            if r.get("burst first late") is not None
                        ]
                    )
                }
                | {"errors": [r["error"] for r in runs if r.get("error")], "runs": len(runs)}
                for name, runs in systems.items()
            }
            for n, systems in s["scale"].items()
        }
    if "failover" in s:
        out["failover"] = {
            v: {
                "takeover": spread([r.get("takeover") for r in runs]),
                "timed out": sum(1 for r in runs if r.get("timed out")),
                "ttl": spread([r.get("lock ttl at kill") for r in runs]),
                "runs": len(runs),
            }
            for v, runs in s["failover"].items()
        }
    return out


# -- formatting -------------------------------------------------------------------------------
def fmt(v: float, unit: str) -> str:
    if unit in ("tasks/s", "msg/s", "tasks") or abs(v) >= 1000:
        return f"{v:,.0f}"
    if unit == "MiB":
        return f"{v:.1f}"
    if unit in ("", "count"):
        return f"{v:.0f}"
    return f"{v:.2f}" if abs(v) < 100 else f"{v:,.0f}"


def cell(f: dict | None, unit: str, runs: int | None = None) -> str:
    if not f:
        return "n/a"
    text = fmt(f["median"], unit)
    if f["min"] != f["max"]:
        text += f" [{fmt(f['min'], unit)}–{fmt(f['max'], unit)}]"
    if runs and f["runs"] < runs:
        text += f" ({f['runs']}/{runs} runs)"
    return text


def rcell(f: dict | None) -> str:
    if not f:
        return "–"
    return f"{f['median']:.2f} [{f['min']:.2f}–{f['max']:.2f}]"


def table(header: list[str], rows: list[list[str]]) -> str:
    lines = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    lines += ["| " + " | ".join(r) + " |" for r in rows]
    return "\n".join(lines)


def core_tables(result: dict) -> list[str]:
    sm, names = result["summary"]["core"], list(result["summary"]["core"])
    repeat = result["params"]["repeat"]
    peers = LABELS
    out = []
    rows = []
    for label, key, unit, _ in CORE_ROWS:
        row = [f"{label} ({unit})"]
        for n in names:
            f = sm[n]["figures"][key]
            c = cell(f, unit, repeat)
            if key == "enqueue batch" and not f:
                c = "no batch API"
            row.append(c)
        rows.append(row)
    out.append(table(["figure: median [min–max]", *[peers[n] for n in names]], rows))
    if "beatq" in names and len(names) > 1:
        others = [n for n in names if n != "beatq"]
        rows = []
        for label, key, _, higher in CORE_ROWS:
            hint = ">1: beatq faster" if higher else "<1: beatq lower"
            rows.append([f"{label} ({hint})", *[rcell(sm[n]["ratio"][key]) for n in others]])
        out.append(
            "beatq ÷ peer, run by run (median [min–max] of the per-repetition quotients):\n\n"
            + table(["ratio", *[f"beatq/{peers[n]}" for n in others]], rows)
        )
    return out


def settings_table(result: dict) -> str:
    sm, described = result["summary"]["core"], result["settings"]
    rows = []
    for name in sm:
        d = described[name]
        best = sm[name]["best"]
        rows.append(
            [
                LABELS[name],
                d["workers"]["one"],
                d["workers"]["default"],
                ", ".join(label for k, label in d["workers"].items() if k != "one"),
                f"**{d['workers'].get(best, best)}**",
                f"`{d['batch api']}`" if d["batch api"] else "none",
                d["rt best"],
                d["eta"],
            ]
        )
    header = ["system", "1 worker process", "defaults", "tried on 2 cores"]
    header += ["best on 2 cores (chosen)", "batch API", "round trip, best", "ETA worker"]
    return table(header, rows)


def eta_table(result: dict) -> str:
    sm = result["summary"]["eta"]
    repeat = result["params"]["repeat"]
    blocks = []
    for n, systems in sm.items():
        names = list(systems)
        rows = []
        for label, key, unit, _ in ETA_ROWS:
            row = [f"{int(n):,} ETA tasks: {label} ({unit})"]
            for name in names:
                f = systems[name]["figures"][key]
                if key == "ran":
                    c = cell(f, unit, repeat) + f" / {int(n):,}" if f else "n/a"
                else:
                    c = cell(f, unit, repeat)
                r = systems[name]["ratio"]
                if r and key not in ("ran",) and r.get(key):
                    c += f"; beatq/{LABELS[name]} {r[key]['median']:.2f}"
                row.append(c)
            rows.append(row)
        blocks.append(table([f"5. ETA, {int(n):,}", *[LABELS[x] for x in names]], rows))
    return "\n\n".join(blocks)


def beat_table(result: dict) -> str:
    sm = result["summary"]
    repeat = result["params"]["repeat"]
    blocks = []
    if "precision" in sm:
        keys = list(sm["precision"])
        rows = []
        for label, key, unit, _ in PRECISION_ROWS:
            row = [f"4. {label}{f' ({unit})' if unit else ''}"]
            for k in keys:
                f = sm["precision"][k]["figures"][key]
                c = cell(f, unit, repeat)
                if key == "runs" and f:
                    c += f" / {fmt(sm['precision'][k]['figures']['expected']['median'], '')}"
                r = sm["precision"][k]["ratio"]
                if r and r.get(key):
                    c += f"; beatq/peer {r[key]['median']:.2f}"
                row.append(c)
            rows.append(row)
        row = ["4. Dramatiq"] + ["no scheduler" if i == 0 else "" for i in range(len(keys))]
        blocks.append(
            table(["beat precision, 1 entry every 1 s", *[SCHED_LABELS[k] for k in keys]], rows)
        )
    if "scale" in sm:
        cap = result["params"].get("beat batch cap s", 30.0)  # 30 s before it was recorded
        for n, systems in sm["scale"].items():
            names = list(systems)
            spec = [
                ("startup: launch → first message", "startup", "s"),
                ("RSS after load", "rss", "MiB"),
                ("peak RSS", "hwm", "MiB"),
                ("CPU while idle", "cpu", "cpu-s/s"),
                ("dispatches/s, all due at once (first → last)", "rate", "msg/s"),
                ("all due at once: slot → first message", "burst first late ms", "ms"),
                ("the 1-s entry's worst lateness during that burst", "burst tick late max", "ms"),
                ("dispatches/s before it was given up", "partial rate", "msg/s"),
            ]
            rows = []
            for label, key, unit in spec:
                row = [f"6. {int(n):,} entries: {label} ({unit})"]
                for name in names:
                    f = systems[name].get(key)
                    c = (
                        "n/a"
                        if not f
                        else (f"{f['median']:.4f}" if unit == "cpu-s/s" else cell(f, unit, repeat))
                    )
                    row.append(c)
                rows.append(row)
            rows.append(
                [
                    f"6. runs (a batch given up after {cap:.0f} s is not repeated)",
                    *[str(systems[x]["runs"]) for x in names],
                ]
            )
            blocks.append(table(["beat scale", *[SCHED_LABELS[x] for x in names]], rows))
    if "failover" in sm:
        fo = sm["failover"]
        cap = result["params"]["failover cap s"]
        rows = []
        for v, label in (
            ("beatq", "beatq (lease 4 s)"),
            ("redbeat", "celery-redbeat, defaults (lock 1,500 s)"),
            (
                "redbeat tuned",
                "celery-redbeat, `redbeat_lock_timeout=5`, `beat_max_loop_interval=1`",
            ),
        ):
            if v not in fo:
                continue
            f = fo[v]
            c = cell(f["takeover"], "s", f["runs"]) if f["takeover"] else ""
            if f["timed out"]:
                c = (c + "; " if c else "") + f"> {cap:.0f} s in {f['timed out']}/{f['runs']} runs"
            rows.append([f"7. {label}", c])
        blocks.append(table(["failover: kill -9 of the leader → next dispatch", "seconds"], rows))
    return "\n\n".join(blocks)


def markdown(result: dict) -> str:
    env, p = result["environment"], result["params"]
    parts = []
    load = (
        f"load average {env['loadavg before'][0]:.2f} at start, "
        f"{env['loadavg after'][0]:.2f} at end"
    )
    parts.append(
        f"Run {env['time']}, commit {str(env.get('git_commit'))[:7]}"
        f"{' + uncommitted beatq changes' if env.get('beatq_tree_dirty') else ''}; "
        f"{env['cpus']} cores, Python {env['python']}, Redis {env['redis_server']}; {load}; "
        f"{p['repeat']} run(s) of every figure, {env['minutes']:.0f} min in all."
        + (f" Skipped: {p['skipped']}." if p.get("skipped") else "")
    )
    if "core" in result["summary"]:
        parts += core_tables(result)
        parts.append(settings_table(result))
        partial = {n: v["partial"] for n, v in result["summary"]["core"].items() if v["partial"]}
        if partial:
            parts.append(
                f"Drains given up after {p['drain cap s']:.0f} s (rate over what ran by then): "
                + "; ".join(f"{LABELS[n]} {', '.join(sorted(set(v)))}" for n, v in partial.items())
            )
    if "eta" in result["summary"]:
        parts.append(eta_table(result))
    if any(k in result["summary"] for k in ("precision", "scale", "failover")):
        parts.append(beat_table(result))
    if result.get("failures"):
        parts.append(f"{len(result['failures'])} run(s) failed: see `failures` in the JSON.")
    return "\n\n".join(parts)


def chart(result: dict, path: Path) -> Path | None:
    try:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:
        return None
    sm = result["summary"]
    panels = []
    if "core" in sm:
        for title, key, unit in (
            ("enqueue, delay()", "enqueue delay", "tasks/s"),
            ("enqueue, batch API", "enqueue batch", "tasks/s"),
            ("drain, 1 process", "drain one", "tasks/s"),
            ("drain, best on 2 cores", "drain best", "tasks/s"),
            ("round trip p50, best", "rt best p50", "ms (lower is better)"),
        ):
            data = [
                (LABELS[n], v["figures"][key]) for n, v in sm["core"].items() if v["figures"][key]
            ]
            panels.append((title, unit, data, False))
    if "precision" in sm:
        data = [
            (CHART_SCHED[k], v["figures"]["late p50"])
            for k, v in sm["precision"].items()
            if v["figures"]["late p50"]
        ]
        panels.append(
            (
                "beat lateness p50, 1-s entry (*: vs previous run + 1 s)",
                "ms, log (lower is better)",
                data,
                True,
            )
        )
    if not panels:
        return None
    cols = 3
    rows = (len(panels) + cols - 1) // cols
    fig, axes = plt.subplots(rows, cols, figsize=(15, 4.2 * rows))
    for ax, (title, unit, data, log) in zip(axes.flat, panels):
        labels = [d[0] for d in data]
        med = [d[1]["median"] for d in data]
        err = [
            [m - d[1]["min"] for m, d in zip(med, data)],
            [d[1]["max"] - m for m, d in zip(med, data)],
        ]
        colors = ["#d62728" if lab.startswith("beatq") else "#7f7f7f" for lab in labels]
        ax.bar(labels, med, yerr=err, color=colors, capsize=3)
        ax.set_title(title)
        ax.set_ylabel(unit)
        if log:
            ax.set_yscale("log")
        ax.tick_params(axis="x", labelsize=8)
    for ax in list(axes.flat)[len(panels) :]:
        ax.axis("off")
    env = result["environment"]
    fig.suptitle(
        f"beatq and peers on one Redis, {env['cpus']} cores; "
        f"median of {result['params']['repeat']} runs, bars = min–max; {env['time'][:10]}, "
        f"load avg {env['loadavg before'][0]:.1f}–{env['loadavg after'][0]:.1f}"
    )
    fig.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=80)
    plt.close(fig)
    return path


def update_readme(readme: Path, text: str, source: str) -> None:
    body = readme.read_text()
    pattern = re.compile(r"(<!-- bench:begin -->\n).*?(<!-- bench:end -->)", re.S)
    if not pattern.search(body):
        raise SystemExit(f"{readme}: no <!-- bench:begin --> ... <!-- bench:end --> markers")
    note = f"<!-- generated by bench/report.py from {source}; do not edit by hand -->\n"
    readme.write_text(pattern.sub(lambda m: m.group(1) + note + text + "\n" + m.group(2), body))


def main() -> int:
    ap = argparse.ArgumentParser(
        prog="python -m bench.report", description=__doc__.split("\n\n")[0]
    )
    ap.add_argument("json", type=Path)
    ap.add_argument("--readme", type=Path, help="replace the marked block of this file")
    ap.add_argument("--png", type=Path, help="write the chart here")
    args = ap.parse_args()
    result = json.loads(args.json.read_text())
    result["summary"] = summarise(result)
    text = markdown(result)
    print(text)
    if args.readme:
        update_readme(args.readme, text, args.json.name)
    if args.png:
        chart(result, args.png)
    return 0


if __name__ == "__main__":
    sys.exit(main())
