"""The benchmark suite: beatq beside Celery 5.7 (+ celery-redbeat), Huey, RQ (+ rq-scheduler),
arq and Dramatiq on one Redis, in one run. bench/README.md says what each figure means.

    bash bench/setup.sh && bench/.venv/bin/python -m bench            # full run (~40 min, loaded)
    bench/.venv/bin/python -m bench --quick                           # development (~12 min)
    bench/.venv/bin/python -m bench --phases core --systems beatq,huey --repeat 5

Phases: core (figures 1-3: enqueue, drain, round trip), precision (4), eta (5), scale (6),
failover (7). One redis-server is started on a free port for the run (killed at the end);
each system has its own database, flushed before each of its runs (nothing else is ever
flushed). Repetitions are interleaved: every repetition runs each system once, in an order
that rotates, and beatq/peer ratios are taken within a repetition. Results:
bench/results/suite.json (suite-quick.json), the table (bench/report.py) and the chart.
"""

from __future__ import annotations

import argparse
import json
import os
import signal
import sys
import tempfile
import time
from contextlib import ExitStack
from pathlib import Path

BENCH = Path(__file__).resolve().parent
ROOT = BENCH.parent
sys.path.insert(0, str(ROOT))

import redis  # noqa: E402

from bench import beat as beatbench  # noqa: E402
from bench import jobs, sched  # noqa: E402
from bench.core import BenchError, environment, frozen_beatq, own_redis  # noqa: E402
from bench.peers import PEERS  # noqa: E402

RESULTS = BENCH / "results"
PHASES = ["core", "precision", "eta", "scale", "failover"]


def params(quick: bool) -> dict:
    if quick:
        return {
            "tasks": 2_000,
            "drain cap s": 10.0,
            "roundtrips": 100,
            "rt cap s": 3.0,
            "precision s": 15.0,
            "eta sizes": [2_000],
            "eta cap s": 10.0,
            "scale sizes": [10_000],
            "failover cap s": 20.0,
            "beat batch cap s": 45.0,
            "skipped": "quick: 2,000 tasks, 100 round trips, 15-s precision window, ETA 2,000 "
            "(no 1,000,000), beat scale 10,000 entries (not 100,000), failover given up after 20 s",
        }
    return {
        "tasks": 20_000,
        "drain cap s": 10.0,
        "roundtrips": 500,
        "rt cap s": 10.0,
        "precision s": 60.0,
        "eta sizes": [20_000, 1_000_000],
        "eta cap s": 10.0,
        "scale sizes": [100_000],
        "failover cap s": 30.0,
        "beat batch cap s": 45.0,
        "skipped": "",
    }


def rotate(names: list[str], rep: int) -> list[str]:
    k = rep % len(names)
    return names[k:] + names[:k]


# -- figures 1-3 --------------------------------------------------------------------------------
def core_rep(peer, p: dict, logs: Path, rep: int) -> dict:
    """One repetition of enqueue, drain (every setting) and round trips for one system."""
    n, cap, name = p["tasks"], p["drain cap s"], peer.name
    out: dict = {"load": os.getloadavg()[0]}
    settings = peer.settings()
    out["enqueue delay"], full = jobs.load(peer, n, batch=False)
    d = jobs.drain(peer, settings["one"], full, cap, logs / f"{name}-one-{rep}.log")
    out["drain one"], out["mem one"], out["done one"] = d["rate"], d["mem"], d["done"]
    batch = peer.batch_api is not None
    for key, setting in settings.items():
        if key == "one" or (key == "default" and setting == settings["one"]):
            continue
        rate, full = jobs.load(peer, n, batch=batch)
        if batch and "enqueue batch" not in out:
            out["enqueue batch"] = rate
        try:
            d = jobs.drain(peer, setting, full, cap, logs / f"{name}-{key}-{rep}.log")
        except BenchError as e:
            print(f"  ! {name} {setting.label}: {e}", flush=True)
            continue
        out[f"drain {key}"], out[f"mem {key}"], out[f"done {key}"] = d["rate"], d["mem"], d["done"]
    if settings["default"] == settings["one"]:
        for k in ("drain", "mem", "done"):
            out[f"{k} default"] = out[f"{k} one"]
    rts = peer.rt_settings()
    for variant in ("default", "best"):
        if variant == "best" and rts["best"] == rts["default"]:
            out.update(
                {k.replace("default", "best"): v for k, v in out.items() if "rt default" in k}
            )
            continue
        r = jobs.roundtrips(
            peer,
            rts[variant],
            variant == "best",
            p["roundtrips"],
            p["rt cap s"],
            logs / f"{name}-rt-{variant}-{rep}.log",
        )
        out |= {f"rt {variant} {k}": v for k, v in r.items()}
    shown = {k: round(v, 2) for k, v in out.items() if isinstance(v, float)}
    print(f"  {name:9} {json.dumps(shown)}", flush=True)
    return out


# -- figure 5 -------------------------------------------------------------------------------------
def eta_rep(peer, n: int, p: dict, logs: Path, rep: int) -> dict:
    chunk = 100 if n <= 100_000 else 1_000
    r = jobs.eta(peer, n, chunk, p["eta cap s"], logs / f"{peer.name}-eta-{n}-{rep}.log")
    shown = {k: round(v, 2) for k, v in r.items()}
    print(f"  {peer.name:9} {n:>9,} {json.dumps(shown)}", flush=True)
    peer.flush()  # waiting ETA messages take memory
    return r


# -- figures 6 and 7: bench/beat.py's scale and failover runs --------------------------------------
def beat_phases(base: str, p: dict, repeat: int, phases: list[str], logs: Path, tmp: Path) -> dict:
    admin = redis.Redis.from_url(base)
    admin.config_set("notify-keyspace-events", "Kl")
    admin.config_set("client-output-buffer-limit", "pubsub 0 0 0")
    channels = [f"{s.db}:{s.tick_key}" for s in beatbench.SYSTEMS.values()]
    observer = beatbench.Observer(base, channels, tmp / "observer.txt")
    ctx = beatbench.Ctx(base, observer, tmp, logs)
    out: dict = {}
    try:
        if "scale" in phases:
            caps = {"startup": 120.0, "burst": p["beat batch cap s"], "celery bulk": "cron"}
            out["scale"] = {}
            for n in p["scale sizes"]:
                runs: dict[str, list] = {s: [] for s in beatbench.SYSTEMS}
                slow: set[str] = set()
                for rep in range(1, repeat + 1):
                    print(f"[scale {n:,} rep {rep}]", flush=True)
                    for name in rotate(list(beatbench.SYSTEMS), rep):
                        if name in slow:
                            continue  # one run when its batch exceeded the cap: too slow
                        try:
                            r = beatbench.scale_run(ctx, beatbench.SYSTEMS[name], n, rep, caps)
                        except BenchError as e:
                            ctx.fail("scale", name, rep, str(e))
                            continue
                        runs[name].append(r)
                        if r.get("error") or (r.get("burst slot-last") or 0) > caps["burst"]:
                            slow.add(name)
                out["scale"][str(n)] = runs
        if "failover" in phases:
            variants = ["beatq", "redbeat", "redbeat tuned"]
            out["failover"] = {v: [] for v in variants}
            for rep in range(1, repeat + 1):
                print(f"[failover rep {rep}]", flush=True)
                for v in rotate(variants, rep):
                    if (
                        v == "redbeat"
                        and rep > 1
                        and all(r.get("timed out") for r in out["failover"][v])
                    ):
                        continue  # its lock outlives the cap by minutes: once is enough
                    try:
                        r = beatbench.failover_run(ctx, v, rep, p["failover cap s"])
                        out["failover"][v].append(r)
                    except BenchError as e:
                        ctx.fail("failover", v, rep, str(e))
    finally:
        beatbench.stop_all()
        observer.stop()
    out["failures"] = ctx.failures
    return out


def main() -> int:
    ap = argparse.ArgumentParser(prog="python -m bench", description=__doc__.split("\n\n")[0])
    ap.add_argument("--quick", action="store_true", help="small sizes, for development")
    ap.add_argument("--repeat", type=int, default=3, help="repetitions of every figure (3)")
    ap.add_argument("--phases", default=",".join(PHASES), help=f"comma list of {PHASES}")
    ap.add_argument("--systems", default=",".join(PEERS), help=f"comma list of {list(PEERS)}")
    ap.add_argument("--out", help="JSON path (default bench/results/suite[-quick].json)")
    args = ap.parse_args()
    phases = [x for x in args.phases.split(",") if x]
    names = [x for x in args.systems.split(",") if x]
    if set(phases) - set(PHASES) or set(names) - PEERS.keys() or args.repeat < 1:
        ap.error(f"--phases: some of {PHASES}; --systems: some of {list(PEERS)}; --repeat >= 1")
    bins = Path(sys.executable).parent
    missing = [
        b
        for b in ("beatq", "celery", "huey_consumer", "rq", "arq", "dramatiq")
        if not (bins / b).exists()
    ]
    if missing:
        ap.error(f"run with bench/.venv/bin/python after `bash bench/setup.sh`; missing {missing}")
    p = params(args.quick)
    logs = RESULTS / "logs"
    logs.mkdir(parents=True, exist_ok=True)
    out_path = Path(args.out or RESULTS / ("suite-quick.json" if args.quick else "suite.json"))

    def on_term(signum, frame):
        raise KeyboardInterrupt

    signal.signal(signal.SIGTERM, on_term)
    t_start = time.time()
    load0 = os.getloadavg()
    samples: dict = {}
    failures: list = []
    try:
        with ExitStack() as stack:
            stack.enter_context(frozen_beatq())
            base = stack.enter_context(own_redis())
            tmp = Path(stack.enter_context(tempfile.TemporaryDirectory(prefix="bench-suite-")))
            env = environment(base, ["beatq"])
            env["versions"] |= peer_versions()
            peers = {}
            for name in names:
                peers[name] = PEERS[name](base)
                stack.callback(peers[name].close)
            if "core" in phases:
                samples["core"] = {name: [] for name in names}
                for rep in range(1, args.repeat + 1):
                    print(f"[core rep {rep}] {p['tasks']:,} tasks", flush=True)
                    for name in rotate(names, rep):
                        try:
                            samples["core"][name].append(core_rep(peers[name], p, logs, rep))
                        except BenchError as e:
                            print(f"  ! {name}: {e}", flush=True)
                            failures.append(
                                {"phase": "core", "system": name, "rep": rep, "error": str(e)}
                            )
            if "precision" in phases:
                keys = [s.key for s in sched.SCHEDULERS]
                samples["precision"] = {k: [] for k in keys}
                for rep in range(1, args.repeat + 1):
                    print(
                        f"[precision rep {rep}] all schedulers at once, {p['precision s']:.0f} s",
                        flush=True,
                    )
                    try:
                        r = sched.precision_run(base, p["precision s"], logs, rep, keys)
                    except BenchError as e:
                        print(f"  ! precision: {e}", flush=True)
                        failures.append({"phase": "precision", "rep": rep, "error": str(e)})
                        continue
                    for k, v in r.items():
                        samples["precision"][k].append(v)
                        print(f"  {k:10} {json.dumps({a: round(b, 2) for a, b in v.items()})}")
            if "eta" in phases:
                samples["eta"] = {}
                for n in p["eta sizes"]:
                    who = names if n <= 100_000 else [x for x in names if x == "beatq"]
                    samples["eta"][str(n)] = {name: [] for name in who}
                    for rep in range(1, args.repeat + 1):
                        print(f"[eta {n:,} rep {rep}]", flush=True)
                        for name in rotate(who, rep):
                            try:
                                samples["eta"][str(n)][name].append(
                                    eta_rep(peers[name], n, p, logs, rep)
                                )
                            except BenchError as e:
                                print(f"  ! {name}: {e}", flush=True)
                                failures.append(
                                    {"phase": "eta", "system": name, "rep": rep, "error": str(e)}
                                )
            beat_wanted = [x for x in ("scale", "failover") if x in phases]
            if beat_wanted:
                r = beat_phases(base, p, args.repeat, beat_wanted, logs, tmp)
                failures += r.pop("failures")
                samples |= r
    except BenchError as e:
        print(f"ERROR: {e}", file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        print("interrupted", file=sys.stderr)
        return 130
    env["loadavg before"] = load0
    env["loadavg after"] = os.getloadavg()
    env["minutes"] = (time.time() - t_start) / 60
    from bench import report

    result = {
        "params": p
        | {"repeat": args.repeat, "systems": names, "phases": phases, "quick": args.quick},
        "environment": env,
        "settings": {name: peers[name].describe() for name in names},
        "samples": samples,
        "failures": failures,
    }
    result["summary"] = report.summarise(result)
    out_path.write_text(json.dumps(result, indent=2) + "\n")
    print()
    print(report.markdown(result))
    chart = report.chart(result, out_path.with_suffix(".png"))
    print(f"\n{env['minutes']:.1f} min; -> {out_path}, {chart}")
    return 0


def peer_versions() -> dict:
    import importlib.metadata as md

    names = ["celery", "celery-redbeat", "huey", "rq", "rq-scheduler", "arq", "dramatiq", "redis"]
    return {n: md.version(n) for n in names}


if __name__ == "__main__":
    sys.exit(main())
