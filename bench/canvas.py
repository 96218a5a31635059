"""Canvas benchmark: a big chord and a long chain, beatq against Celery 5.7, in one run.

    bench/.venv/bin/python bench/canvas.py [--quick] [--repeat N] [--systems beatq,celery]
        [--workloads chord,chain,chain-distinct] [--celery-follow-parents]

Workloads (N = 10,000 members / 1,000 links; --quick: 1,000 / 100):

  chord           chord((add.s(i, i) for i in range(N)), tsum.s())   -> N * (N - 1)
  chain           chain(add.s(0, 1), *[add.s(1)] * (L - 1))          -> L
  chain-distinct  chain(add.s(0, 1), *[add.s(1) for _ in ...])        -> L

`chain` is the expression as users write it (one signature object repeated); `chain-distinct`
builds a new signature per link, so that a system that mishandles the repeated object still
gets a chain timing. Each run: a fresh worker (its db flushed first) is started and warmed up
(one task, a chord of 10, a chain of 10), Redis statistics are reset (CONFIG RESETSTAT), then
the time is taken from `apply_async()` to `.get()` returning; the value is checked.

Each system gets its own redis-server (started here on a free port, killed at the end; beatq
in db 1, Celery in db 2), so that INFO commandstats counts one system only: every command,
including those a Lua script runs (an EVALSHA counts 1 and so does each command inside it).
"socket reads" is the server's total_reads_processed: about one per client round trip (a
pipeline is one; a very large request may take several reads). The client's own commands and
round trips are counted in the client process by wrapping redis-py's connection.

Celery runs with bench/apps/celery_app.py's settings (its defaults, Redis result backend on
the broker's URL): its chord is counted by the Redis backend's on_chord_part_return (a Lua
script per member over a sorted set, result_chord_ordered=True; no chord_unlock polling
task). Celery's result is awaited with get(follow_parents=False): its default (True) reads the
state of every unfinished parent (each chord member, each earlier link) before waiting and
again after every message its result consumer reads, and for a chord of 10,000 that client
work alone outlasted the timeout (the worker had stored the body's result after ~14 s, get()
had not returned after 322 s). --celery-follow-parents measures Celery's get() as it is.

Each run's client (apply_async, get, the counting) is a process of its own, started after
the worker; "time" is apply_async() to get() returning, "stored" is apply_async() to the
final result's date_done as written by the worker.
"""

from __future__ import annotations

import argparse
import importlib
import json
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from contextlib import ExitStack
from datetime import datetime, timezone
from pathlib import Path

BENCH = Path(__file__).resolve().parent
ROOT = BENCH.parent
sys.path.insert(0, str(ROOT))

import redis  # noqa: E402

from bench.core import (  # noqa: E402
    BIN,
    RESULTS,
    SYSTEMS,
    BenchError,
    Worker,
    environment,
    frozen_beatq,
    own_redis,
    spread,
    wait_for,
    with_db,
)

START_TIMEOUT = 60.0  # worker start until its first task is done
SETTLE = 0.25  # after .get() returns, before reading the server's statistics

# (pool, concurrency): the first is "1 process"; the second the 2-core setting
SETTINGS = {
    "beatq": (("solo", 1), ("threads", 4)),
    "celery": (("solo", 1), ("prefork", 2)),
}
WORKLOADS = ("chord", "chain", "chain-distinct")
UNIT = {"chord": "member", "chain": "link", "chain-distinct": "link"}
# bench's own commands on the server, left out of the counts
OWN_COMMANDS = {"info", "config|resetstat"}
SCRIPT_COMMANDS = {"eval", "evalsha", "eval_ro", "evalsha_ro", "fcall", "fcall_ro"}


def label(setting: tuple[str, int]) -> str:
    return f"-P {setting[0]} -c {setting[1]}"


class ClientCounter:
    """What this process sends through redis-py while on: commands (a pipeline counts each
    of its commands) and round trips (one per command sent alone, one per pipeline)."""

    def __init__(self) -> None:
        self.on = False
        self.commands = self.round_trips = 0

    def install(self) -> None:
        from redis.connection import AbstractConnection as Conn

        send_packed, send_command, pack_commands = (
            Conn.send_packed_command,
            Conn.send_command,
            Conn.pack_commands,
        )
        counter = self

        def counted_send_packed(conn, command, check_health=True):
            if counter.on:
                counter.round_trips += 1
            return send_packed(conn, command, check_health)

        def counted_send_command(conn, *args, **kwargs):
            if counter.on:
                counter.commands += 1
            return send_command(conn, *args, **kwargs)

        def counted_pack_commands(conn, commands):
            commands = list(commands)
            if counter.on:
                counter.commands += len(commands)
            return pack_commands(conn, commands)

        Conn.send_packed_command = counted_send_packed
        Conn.send_command = counted_send_command
        Conn.pack_commands = counted_pack_commands

    def start(self) -> None:
        self.commands = self.round_trips = 0
        self.on = True

    def stop(self) -> dict[str, int]:
        self.on = False
        return {"commands": self.commands, "round_trips": self.round_trips}


COUNTER = ClientCounter()


def server_stats(client: redis.Redis) -> dict:
    """Commands by name (script-internal ones included), socket reads and bytes since the
    last CONFIG RESETSTAT, less this benchmark's own INFO and CONFIG RESETSTAT."""
    info = client.info("stats", "commandstats")
    by_command = {
        k[len("cmdstat_") :]: v["calls"]
        for k, v in info.items()
        if k.startswith("cmdstat_") and k[len("cmdstat_") :] not in OWN_COMMANDS
    }
    return {
        "commands": sum(by_command.values()),
        "scripts": sum(by_command.get(c, 0) for c in SCRIPT_COMMANDS),
        "reads": info["total_reads_processed"] - 1,  # the INFO itself
        "net_in": info["total_net_input_bytes"],
        "net_out": info["total_net_output_bytes"],
        "by_command": dict(sorted(by_command.items(), key=lambda kv: -kv[1])),
    }


def short(value) -> str:
    text = repr(value)
    return text if len(text) < 200 else text[:200] + "..."


class Client:
    """The client side of one run, in a process of its own (`canvas.py --client SPEC`), so
    that no run inherits another's client state (Celery's result consumer keeps a
    subscription per unfinished result, and a timed-out run leaves thousands)."""

    def __init__(self, name: str, url: str, follow_parents: bool):
        self.name, self.url = name, url
        # Celery's get() re-reads the state of every unfinished parent before it waits and
        # every 0.5 s while it waits (follow_parents=True, its default); beatq's get() waits
        self.get_options = {} if follow_parents or name != "celery" else {"follow_parents": False}
        self.admin = redis.Redis.from_url(url)  # stats and diagnostics, not counted
        os.environ["BENCH_REDIS_URL"] = url
        self.app = importlib.import_module(SYSTEMS[name].module)
        lib = importlib.import_module(name)
        self.chord, self.chain, self.lib_file = lib.chord, lib.chain, lib.__file__

    def build(self, workload: str, n: int):
        """The canvas, and the value it must return."""
        add, tsum = self.app.add, self.app.tsum
        if workload == "chord":
            return self.chord((add.s(i, i) for i in range(n)), tsum.s()), n * (n - 1)
        if workload == "chain":
            return self.chain(add.s(0, 1), *[add.s(1)] * (n - 1)), n
        if workload == "chain-distinct":
            return self.chain(add.s(0, 1), *[add.s(1) for _ in range(n - 1)]), n
        raise ValueError(workload)

    def warm_up(self) -> None:
        first = self.app.add.delay(1, 1)
        wait_for(first.ready, START_TIMEOUT, "the worker to run a first task", interval=0.02)
        for workload, n in (("chord", 10), ("chain-distinct", 10)):
            sig, expected = self.build(workload, n)
            try:
                value = sig.apply_async().get(timeout=30, **self.get_options)
            except Exception as e:
                raise BenchError(f"warm-up {workload} of {n}: {type(e).__name__}: {e}") from e
            if value != expected:
                raise BenchError(
                    f"warm-up {workload} of {n} returned {short(value)}, not {expected}"
                )

    def lists(self) -> str:
        """Lengths of the lists in the db (for error messages)."""
        lists = []
        for key in self.admin.scan_iter(count=1000):
            if self.admin.type(key) == b"list" and (n := self.admin.llen(key)) > 1:
                lists.append(f"{key.decode(errors='replace')}={n:,}")
        return ", ".join(lists[:10]) or "no list longer than 1"

    @staticmethod
    def stored_after(result, wall0: float) -> float | None:
        """Seconds from apply to the final result's date_done (written by the worker)."""
        try:
            done = result.date_done
        except Exception:
            return None
        if done is None:
            return None
        if isinstance(done, str):
            done = datetime.fromisoformat(done)
        if done.tzinfo is None:
            done = done.replace(tzinfo=timezone.utc)
        return done.timestamp() - wall0

    def run(self, workload: str, n: int) -> dict:
        self.warm_up()
        sig, expected = self.build(workload, n)
        self.admin.config_resetstat()
        COUNTER.start()
        wall0, t0 = time.time(), time.perf_counter()
        result = None
        try:
            result = sig.apply_async()
            t_apply = time.perf_counter()
            value = result.get(timeout=timeout_for(n), **self.get_options)
        except Exception as e:  # each system raises its own TimeoutError
            COUNTER.stop()
            secs = time.perf_counter() - t0
            stored = self.stored_after(result, wall0) if result is not None else None
            where = (
                f"the worker stored the final result {stored:.1f}s after apply"
                if stored is not None
                else "the final result is not stored"
            )
            raise BenchError(
                f"{workload} of {n:,}: get() raised after {secs:.0f}s "
                f"({type(e).__name__}: {e}); {where}; lists: {self.lists()}"
            ) from e
        seconds = time.perf_counter() - t0
        client = COUNTER.stop()
        time.sleep(SETTLE)
        server = server_stats(self.admin)
        return {
            "seconds": seconds,
            "apply seconds": t_apply - t0,
            "stored seconds": self.stored_after(result, wall0),
            "value": value if value == expected else short(value),
            "expected": expected,
            "server": server,
            "client": client,
            "module": self.lib_file,
        }


def timeout_for(n: int) -> float:
    return 60 + n / 40


def client_main(spec_json: str) -> None:
    """`canvas.py --client SPEC`: one run's client side; writes its figures to spec["out"]."""
    spec = json.loads(spec_json)
    # the frozen copy of beatq (first in PYTHONPATH) must win over ROOT, put first above
    for entry in reversed([e for e in os.environ.get("PYTHONPATH", "").split(os.pathsep) if e]):
        sys.path.insert(0, entry)
    COUNTER.install()
    try:
        out = Client(spec["system"], spec["url"], spec["follow_parents"]).run(
            spec["workload"], spec["n"]
        )
    except Exception as e:
        out = {"error": f"{type(e).__name__}: {e}" if not isinstance(e, BenchError) else str(e)}
    Path(spec["out"]).write_text(json.dumps(out))
    sys.stdout.flush()
    sys.stderr.flush()
    # no interpreter shutdown: Celery's AsyncResult.__del__ unsubscribes, one by one
    os._exit(0)


class Runner:
    """One system, from the benchmark's side: its db, its workers, its client processes."""

    def __init__(self, name: str, base_url: str, follow_parents: bool, tmp: Path):
        self.name, self.system, self.follow_parents = name, SYSTEMS[name], follow_parents
        self.url = with_db(base_url, self.system.db)
        self.admin = redis.Redis.from_url(self.url)
        self.tmp = tmp

    def run(self, workload: str, n: int, setting, log: Path) -> dict:
        """Start a worker on an empty db, then a client that warms it up and times one
        canvas; the figures."""
        self.admin.flushdb()
        out = self.tmp / "client.json"
        out.unlink(missing_ok=True)
        spec = {
            "system": self.name,
            "url": self.url,
            "workload": workload,
            "n": n,
            "follow_parents": self.follow_parents,
            "out": str(out),
        }
        client_log = log.with_name(log.stem + ".client.log")
        with Worker(self.system, self.url, setting[0], setting[1], log) as w:
            cmd = [sys.executable, str(Path(__file__).resolve()), "--client", json.dumps(spec)]
            with open(client_log, "wb") as client_out:
                child = subprocess.Popen(cmd, cwd=ROOT, stdout=client_out, stderr=subprocess.STDOUT)
            deadline = time.monotonic() + START_TIMEOUT + 90 + timeout_for(n)
            try:
                while child.poll() is None:
                    w.check_alive()
                    if time.monotonic() > deadline:
                        raise BenchError(f"{w.label}: the client of {workload} did not finish")
                    time.sleep(0.1)
            finally:
                if child.poll() is None:
                    child.kill()
                    child.wait()
            w.check_alive()
        if not out.exists():
            tail = client_log.read_text(errors="replace")[-3000:]
            raise BenchError(f"{w.label}: client exited {child.returncode}; log tail:\n{tail}")
        data = json.loads(out.read_text())
        if "error" in data:
            raise BenchError(f"{w.label}: {data['error']}")
        server, client = data["server"], data["client"]
        rec = {
            "seconds": data["seconds"],
            "apply seconds": data["apply seconds"],
            "stored seconds": data["stored seconds"],
            "per s": n / data["seconds"],
            "commands/N": server["commands"] / n,
            "scripts/N": server["scripts"] / n,
            "reads/N": server["reads"] / n,
            "net in B/N": server["net_in"] / n,
            "net out B/N": server["net_out"] / n,
            "client commands/N": client["commands"] / n,
            "client round trips/N": client["round_trips"] / n,
            "server": server,
            "client": client,
            "client module": data["module"],
            "load 1m": os.getloadavg()[0],
        }
        if data["value"] != data["expected"]:
            rec["value"] = data["value"]
            raise WrongValue(
                f"{w.label}: {workload} of {n:,} returned {data['value']}, "
                f"expected {data['expected']} (after {data['seconds']:.3f}s)",
                rec,
            )
        return rec


class WrongValue(BenchError):
    def __init__(self, message: str, rec: dict):
        super().__init__(message)
        self.rec = rec


# -- summary -------------------------------------------------------------------------------
ROWS = [  # (label, which setting, metric, format)
    ("time, 1 process (-P solo)", "solo", "seconds", ".2f"),
    ("time, 2-core setting", "2core", "seconds", ".2f"),
    ("time, best setting", "best", "seconds", ".2f"),
    ("{unit}s/s, best setting", "best", "per s", ",.0f"),
    ("final result stored (worker side), best", "best", "stored seconds", ".2f"),
    ("client send time (apply_async), solo", "solo", "apply seconds", ".3f"),
    ("Redis commands/{unit}, solo", "solo", "commands/N", ".2f"),
    ("Redis commands/{unit}, 2-core", "2core", "commands/N", ".2f"),
    ("  of which scripts (EVAL*)/{unit}, solo", "solo", "scripts/N", ".2f"),
    ("socket reads/{unit} (~round trips), solo", "solo", "reads/N", ".2f"),
    ("client commands/{unit}, solo", "solo", "client commands/N", ".2f"),
    ("client round trips/{unit}, solo", "solo", "client round trips/N", ".2f"),
    ("bytes to Redis/{unit}, solo", "solo", "net in B/N", ",.0f"),
]
TOP = 6


def summarise(samples: dict, names: list[str], wls: list[str], n_of: dict[str, int]) -> dict:
    """samples[name][setting label][workload] = [record or None per rep]."""

    def series(name, setting, workload, metric):
        return [r and r[metric] for r in samples[name][setting][workload]]

    out: dict = {}
    for wl in wls:
        best = {}
        for name in names:
            meds = {s: spread(series(name, s, wl, "seconds")) for s in map(label, SETTINGS[name])}
            ok = {s: m["median"] for s, m in meds.items() if m}
            best[name] = min(ok, key=ok.get) if ok else None
        which = {
            name: {
                "solo": label(SETTINGS[name][0]),
                "2core": label(SETTINGS[name][1]),
                "best": best[name],
            }
            for name in names
        }
        figures = {}
        for row, w, metric, _ in ROWS:
            row = row.format(unit=UNIT[wl])
            ser = {
                name: series(name, which[name][w], wl, metric) if which[name][w] else [None]
                for name in names
            }
            fig = {name: spread(ser[name]) for name in names}
            if {"beatq", "celery"} <= set(names):
                pairs = zip(ser["beatq"], ser["celery"])  # run by run
                ratios = [b / c if b is not None and c else None for b, c in pairs]
                fig["beatq/celery"] = spread(ratios) or (
                    "n/a" if fig["beatq"] and fig["celery"] else None
                )
            figures[row] = fig
        top = {}
        for name in names:
            top[name] = {}
            for s in map(label, SETTINGS[name]):
                recs = [r for r in samples[name][s][wl] if r]
                if not recs:
                    continue
                cmds = {c for r in recs for c in r["server"]["by_command"]}
                per = {
                    c: statistics.median(r["server"]["by_command"].get(c, 0) for r in recs)
                    / n_of[wl]
                    for c in cmds
                }
                top[name][s] = dict(sorted(per.items(), key=lambda kv: -kv[1]))
        out[wl] = {"settings": which, "figures": figures, "commands per unit (median)": top}
    return out


def table(summary: dict, names: list[str], wls: list[str], runs: int, n_of: dict[str, int]) -> str:
    def cell(f: dict | None, spec: str) -> str:
        if isinstance(f, str):
            return f
        if not f:
            return "failed"
        text = f"{f['median']:{spec}} [{f['min']:{spec}}–{f['max']:{spec}}]"
        return text + (f" ({f['runs']}/{runs} runs)" if f["runs"] < runs else "")

    cols = names + (["beatq/celery"] if {"beatq", "celery"} <= set(names) else [])
    rows: list[list[str]] = [["figure: median [min–max]", *cols]]
    seps = []
    for wl in wls:
        s = summary[wl]
        best = ", ".join(f"{n} {s['settings'][n]['best'] or '-'}" for n in names)
        seps.append(len(rows))
        rows.append([f"{wl} ({n_of[wl]:,} {UNIT[wl]}s; best: {best})"] + [""] * len(cols))
        for row, _, _, fmt in ROWS:
            figs = s["figures"][row.format(unit=UNIT[wl])]
            rows.append(
                ["  " + row.format(unit=UNIT[wl])]
                + [cell(figs[c], ".2f" if "/" in c else fmt) for c in cols]
            )
    widths = [max(len(r[i]) for r in rows if len(r) > 1 and r[1]) for i in range(len(cols) + 1)]
    lines = []
    for i, r in enumerate(rows):
        if i in seps:
            lines.append(r[0])
        else:
            lines.append("  ".join(c.ljust(wd) for c, wd in zip(r, widths)).rstrip())
    rule = "-" * max(map(len, lines))
    lines.insert(1, rule)
    notes = [rule]
    for name in names:
        notes.append(
            f"{name}: 1 process = {label(SETTINGS[name][0])}; 2-core = {label(SETTINGS[name][1])}"
        )
        for wl in wls:
            top = summary[wl]["commands per unit (median)"][name].get(label(SETTINGS[name][0]))
            if top:
                text = ", ".join(f"{c} {v:.2f}" for c, v in list(top.items())[:TOP])
                notes.append(f"  top commands/{UNIT[wl]}, {wl}, solo: {text}")
    return "\n".join(lines + notes)


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--repeat", type=int, default=3, help="repetitions of every figure (3)")
    ap.add_argument("--quick", action="store_true", help="1,000 chord members / 100 chain links")
    ap.add_argument("--systems", default="beatq,celery", help="comma list of beatq, celery")
    ap.add_argument(
        "--workloads", default=",".join(WORKLOADS), help=f"comma list of {', '.join(WORKLOADS)}"
    )
    ap.add_argument(
        "--celery-follow-parents",
        action="store_true",
        help="Celery's get() as it is (follow_parents=True); default: get(follow_parents=False)",
    )
    ap.add_argument("--client", help=argparse.SUPPRESS)  # internal: one run's client side
    args = ap.parse_args()
    if args.client:
        client_main(args.client)
    names = [s.strip() for s in args.systems.split(",") if s.strip()]
    wls = [s.strip() for s in args.workloads.split(",") if s.strip()]
    if not names or set(names) - SETTINGS.keys() or args.repeat < 1 or set(wls) - set(WORKLOADS):
        ap.error("--systems: beatq, celery; --workloads: " + ", ".join(WORKLOADS))
    missing = [name for name in names if not (BIN / name).exists()]
    if missing or not shutil.which("redis-server"):
        ap.error(
            f"run under bench/.venv (see bench/setup.sh); missing: {missing or 'redis-server'}"
        )
    members, links = (1_000, 100) if args.quick else (10_000, 1_000)
    n_of = {"chord": members, "chain": links, "chain-distinct": links}
    logs = RESULTS / "logs"
    logs.mkdir(parents=True, exist_ok=True)
    load0 = os.getloadavg()
    if load0[0] > 0.5:
        print(f"! load average {load0[0]:.2f} before start: figures will be noisy")

    samples = {n: {label(s): {wl: [] for wl in WORKLOADS} for s in SETTINGS[n]} for n in names}
    failures: list[dict] = []
    try:
        with ExitStack() as stack:
            if "beatq" in names and (ROOT / "beatq").is_dir():
                stack.enter_context(frozen_beatq())
            urls = {name: stack.enter_context(own_redis()) for name in names}
            tmp = Path(stack.enter_context(tempfile.TemporaryDirectory(prefix="bench-canvas-")))
            follow = args.celery_follow_parents
            runners = {name: Runner(name, urls[name], follow, tmp) for name in names}
            env = environment(urls[names[0]], names)
            for rep in range(1, args.repeat + 1):
                order = names[rep % len(names) :] + names[: rep % len(names)]  # alternate
                for name in order:
                    for setting in SETTINGS[name]:
                        for wl in WORKLOADS:
                            if wl not in wls:
                                samples[name][label(setting)][wl].append(None)
                                continue
                            tag = f"[rep {rep}] {name} {label(setting)} {wl} {n_of[wl]:,}"
                            print(tag, end=": ", flush=True)
                            log = logs / f"canvas-{name}-{setting[0]}{setting[1]}-{wl}-{rep}.log"
                            rec = None
                            try:
                                rec = runners[name].run(wl, n_of[wl], setting, log)
                                print(
                                    f"{rec['seconds']:.2f}s (send {rec['apply seconds']:.2f}s), "
                                    f"{rec['commands/N']:.2f} commands/{UNIT[wl]}, "
                                    f"{rec['reads/N']:.2f} reads/{UNIT[wl]}",
                                    flush=True,
                                )
                            except BenchError as e:
                                print(f"FAILED\n  ! {e}", flush=True)
                                failures.append(
                                    {
                                        "system": name,
                                        "setting": label(setting),
                                        "workload": wl,
                                        "rep": rep,
                                        "error": str(e),
                                        "record": getattr(e, "rec", None),
                                        "log": str(log.relative_to(ROOT)),
                                    }
                                )
                            samples[name][label(setting)][wl].append(rec)
    except BenchError as e:
        print(f"ERROR: {e}", file=sys.stderr)
        return 1
    env["loadavg before"] = load0
    env["loadavg after"] = os.getloadavg()
    env["redis"] = "one redis-server per system, started here; beatq db 1, celery db 2"

    summary = summarise(samples, names, wls, n_of)
    result = {
        "params": {
            "chord members": members,
            "chain links": links,
            "repeat": args.repeat,
            "systems": names,
            "workloads": wls,
            "settings": {n: [label(s) for s in SETTINGS[n]] for n in names},
            "settle seconds": SETTLE,
            "celery get follow_parents": args.celery_follow_parents,
        },
        "environment": env,
        "summary": summary,
        "samples": samples,
        "failures": failures,
    }
    stem = "canvas" + ("-quick" if args.quick else "")
    stem += "-celery-follow-parents" if args.celery_follow_parents else ""
    out = RESULTS / f"{stem}.json"
    out.write_text(json.dumps(result, indent=2) + "\n")
    print()
    print(table(summary, names, wls, args.repeat, n_of))
    if failures:
        print(f"\n{len(failures)} run(s) failed:")
        for f in failures:
            print(f"  {f['system']} {f['setting']} {f['workload']} rep {f['rep']}: {f['error']}")
    la = ", ".join(f"{x:.2f}" for x in env["loadavg after"])
    print(
        f"\nchord {members:,} members, chains {links:,} links, {args.repeat} runs; "
        "ratios run by run (time: < 1 = beatq faster). "
        f"load average before {load0[0]:.2f}, after {la}. -> {out}"
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
