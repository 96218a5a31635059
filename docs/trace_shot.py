"""Make docs/trace.png: one real trace, from a web request through a worker, as a waterfall.

    python docs/trace_shot.py [--out docs/trace.png] [--html trace.html] [--rounds 3]

A private redis-server and a `beatq worker` (prefork, two children) started through the
CLI on tests.proj, traced by tests.otel_spans (its spans written to a file as they end,
service "worker"). This process, service "web", traces with the SDK's in-memory exporter
and, under a "POST /orders" server span, sends a chain (add, then mul) whose last step has
a `link=` callback (echo), and a task that fails (fail) with a `link_error=` errback
(old-style, so sent as a message), three times over (`--rounds`). The last trace's spans
(the rounds before it warm both processes' first traced calls), from both processes, are
drawn as an HTML waterfall (one row per span, indented under its parent, on one time axis;
span links and errors marked) and Debian's headless Chromium photographs it.
"""

from __future__ import annotations

import argparse
import html
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from bench.core import own_redis, wait_for  # noqa: E402

Span = dict[str, Any]
EXPECTED = 11  # web: the request, two sends; worker: four runs, three sends after a run

ROW = 30  # px, every row of the waterfall
NAME_W, SERVICE_W, TIME_W = 470, 170, 740  # px, the three columns
PAD = 12  # px, inside the time column at either end
COLOURS = {"web": "#3b6fd8", "worker": "#12907e"}
OTHER = "#7b5cc4"
ERROR = "#d23a3a"


def start(args: list[str], env: dict[str, str], log: Path) -> subprocess.Popen:
    argv = [sys.executable, "-m", "beatq", "-A", "tests.proj", *args]
    return subprocess.Popen(argv, env=env, stdout=log.open("w"), stderr=subprocess.STDOUT)


# -- the trace ----------------------------------------------------------------------------------
def make_trace(env: dict[str, str], rounds: int) -> list[Span]:
    """Send the workflow under a web request's span, `rounds` times one after the other;
    return the last trace's spans, from here and from the worker, once all have ended (the
    rounds before it warm both processes: the first traced send and runs of each process
    pay for imports and first calls, which the picture is not about)."""
    from opentelemetry.sdk.resources import Resource
    from opentelemetry.sdk.trace import TracerProvider
    from opentelemetry.sdk.trace.export import SimpleSpanProcessor
    from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter
    from opentelemetry.trace import SpanKind

    from beatq import chain, otel
    from tests.otel_spans import read_spans, span_dict
    from tests.proj import app
    from tests.proj.tasks import CustomError, add, echo, errback_old, fail, mul

    exporter = InMemorySpanExporter()
    provider = TracerProvider(resource=Resource.create({"service.name": "web"}))
    provider.add_span_processor(SimpleSpanProcessor(exporter))
    otel.instrument(app, provider)
    tracer = provider.get_tracer("shop.web")
    path = Path(env["BEATQ_TEST_OTEL_FILE"])

    def trace(trace_id: str) -> list[Span]:
        found = [span_dict(s) for s in exporter.get_finished_spans()] + read_spans(path)
        return [s for s in found if s["trace_id"] == trace_id]

    try:
        for _ in range(rounds):
            with tracer.start_as_current_span("POST /orders", kind=SpanKind.SERVER) as request:
                total = chain(add.s(2, 2), mul.s(10)).apply_async(link=echo.s())
                declined = fail.apply_async(("card declined",), link_error=errback_old.s())
            assert total.get(timeout=30) == 40
            try:
                declined.get(timeout=30)
            except CustomError:
                pass
            else:
                raise AssertionError("fail() succeeded")
            trace_id = f"{request.get_span_context().trace_id:032x}"
            what = f"the {EXPECTED} spans of trace {trace_id}"
            wait_for(lambda t=trace_id: len(trace(t)) >= EXPECTED, 30, what, interval=0.05)
    finally:
        otel.uninstrument(app)
    return trace(trace_id)


# -- the waterfall ------------------------------------------------------------------------------
def tree_order(spans: list[Span]) -> list[tuple[Span, int]]:
    """Each span with its depth, parents before children, siblings by start."""
    ids = {s["span_id"] for s in spans}
    children: dict[str | None, list[Span]] = {}
    for s in spans:
        parent = s["parent_id"] if s["parent_id"] in ids else None
        children.setdefault(parent, []).append(s)
    rows: list[tuple[Span, int]] = []

    def visit(parent: str | None, depth: int) -> None:
        for s in sorted(children.get(parent, []), key=lambda s: s["start_ns"]):
            rows.append((s, depth))
            visit(s["span_id"], depth + 1)

    visit(None, 0)
    return rows


def duration(ns: float) -> str:
    ms = ns / 1e6
    return f"{ms * 1000:.0f} µs" if ms < 1 else f"{ms:.2f} ms" if ms < 10 else f"{ms:.1f} ms"


def tick_step(span_ms: float) -> float:
    """A round step in ms giving about six ticks over `span_ms`."""
    for step in (0.5, 1, 2, 5, 10, 20, 25, 50, 100, 200, 250, 500, 1000, 2000, 5000):
        if span_ms / step <= 7:
            return step
    return 10000.0


def waterfall_html(spans: list[Span]) -> str:
    """The page: a title line, one row per span (name and task, kind, span links, ERROR;
    service and pid; its bar on the trace's time axis, with duration and state), a legend."""
    rows = tree_order(spans)
    begin = min(s["start_ns"] for s in spans)
    end = max(s["end_ns"] for s in spans)
    scale = (TIME_W - 2 * PAD) / (end - begin)  # px per ns

    def x(ns: int) -> float:
        return PAD + (ns - begin) * scale

    row_of = {s["span_id"]: i for i, (s, _) in enumerate(rows)}
    services = sorted({s["service"] for s in spans}, key=lambda name: name != "web")
    root = rows[0][0]
    out: list[str] = []
    total_ms = (end - begin) / 1e6
    title = (
        f'<div class="title"><b>{html.escape(root["name"])}</b> · trace '
        f"<code>{root['trace_id']}</code> · {len(spans)} spans in {len(services)} services "
        f"({', '.join(services)}) · {duration(end - begin)}</div>"
    )
    step = tick_step(total_ms)
    ticks = [i * step for i in range(int(total_ms / step) + 1)]
    axis = "".join(
        f'<span class="tick" style="left:{x(begin + t * 1e6):.1f}px">{t:g} ms</span>' for t in ticks
    )
    out.append(
        f'<div class="row head"><div class="name">span</div>'
        f'<div class="svc">service · process</div><div class="time">{axis}</div></div>'
    )
    for s, depth in rows:
        attributes = s["attributes"]
        task = str(attributes.get("beatq.task.name", "")).rsplit(".", 1)[-1]
        error = s["status"] == "ERROR"
        colour = ERROR if error else COLOURS.get(s["service"], OTHER)
        badges = ""
        for link in s["links"]:
            kind = link["attributes"].get("beatq.link.kind", "link")
            badges += f'<span class="badge link">↪ {html.escape(kind)}</span>'
        if error:
            badges += '<span class="badge err">ERROR</span>'
        guide = f'<span class="indent" style="width:{depth * 18}px"></span>'
        label = f'<span class="task">{html.escape(task)}</span>' if task else ""
        span_kind = f'<span class="kind">{s["kind"].lower()}</span>'
        left, width = x(s["start_ns"]), max((s["end_ns"] - s["start_ns"]) * scale, 2.0)
        note = duration(s["end_ns"] - s["start_ns"])
        if error and s.get("status_message"):
            note += f" · {s['status_message']}"
        elif attributes.get("beatq.task.state"):
            note += f" · {attributes['beatq.task.state']}"
        # the note after the bar, or before it when the bar ends near the right edge
        if left + width + 8 + 7 * len(note) < TIME_W:
            where = f"left:{left + width + 6:.1f}px"
        else:
            where = f"right:{TIME_W - left + 6:.1f}px"
        out.append(
            f'<div class="row{" error" if error else ""}">'
            f'<div class="name">{guide}<span class="dot" style="background:{colour}"></span>'
            f'<span class="sname">{html.escape(s["name"])}</span>{label}{span_kind}{badges}</div>'
            f'<div class="svc"><span style="color:{COLOURS.get(s["service"], OTHER)}">'
            f"{html.escape(str(s['service']))}</span> · pid {s['pid']}</div>"
            f'<div class="time"><div class="bar" style="left:{left:.1f}px;width:{width:.1f}px;'
            f'background:{colour}"></div><span class="note{" errnote" if error else ""}" '
            f'style="{where}">{html.escape(note)}</span></div></div>'
        )
    # the tick lines, under the bars; the span links, over them: from under the bar of the
    # run followed, down to the start of the bar of the send that follows it
    height = len(rows) * ROW
    grid = [f'<svg class="over" width="{TIME_W}" height="{height}">']
    for t in ticks:
        gx = x(begin + t * 1e6)
        grid.append(f'<line x1="{gx:.1f}" y1="0" x2="{gx:.1f}" y2="{height}" class="grid"/>')
    grid.append("</svg>")
    links = [f'<svg class="over" width="{TIME_W}" height="{height}">']
    for s, _ in rows:
        for link in s["links"]:
            source = row_of.get(link["span_id"])
            if source is None:
                continue
            lx = x(s["start_ns"])
            y1, y2 = source * ROW + 22, row_of[s["span_id"]] * ROW + ROW / 2
            links.append(
                f'<path d="M{lx - 7:.1f},{y1:.1f} L{lx - 7:.1f},{y2 - 3:.1f} Q{lx - 7:.1f},'
                f'{y2:.1f} {lx - 4:.1f},{y2:.1f} L{lx - 1:.1f},{y2:.1f}" class="linkline" '
                f'marker-end="url(#arrow)"/>'
            )
    links.append(
        '<defs><marker id="arrow" viewBox="0 0 8 8" refX="7" refY="4" markerWidth="6" '
        'markerHeight="6" orient="auto"><path d="M0,0 L8,4 L0,8 z" fill="#c07a12"/></marker>'
        "</defs></svg>"
    )
    legend = "".join(
        f'<span><span class="dot" style="background:{COLOURS.get(name, OTHER)}"></span>'
        f"{html.escape(name)}</span>"
        for name in services
    )
    legend += f'<span><span class="dot" style="background:{ERROR}"></span>status ERROR</span>'
    legend += (
        '<span><span class="badge link">↪ kind</span><span>a span link to the run it '
        "follows (dashed arrow), its <code>beatq.link.kind</code></span></span>"
    )
    return PAGE.format(
        title=title,
        body="\n".join(out),
        grid="".join(grid),
        links="".join(links),
        legend=legend,
        row=ROW,
        name_w=NAME_W,
        svc_w=SERVICE_W,
        time_w=TIME_W,
        total_w=NAME_W + SERVICE_W + TIME_W,
        over_left=NAME_W + SERVICE_W,
        error=ERROR,
    )


PAGE = """<!doctype html>
<html><head><meta charset="utf-8"><title>beatq trace</title><style>
body {{ margin: 0; background: #eef0f3; font: 13px/1.3 system-ui, sans-serif; color: #1d232b; }}
#trace {{ width: {total_w}px; margin: 16px; background: #fff; border: 1px solid #d5d9df;
         border-radius: 6px; padding: 12px 0 10px; }}
.title {{ padding: 0 14px 10px; font-size: 14px; }}
.title code, .legend code {{ font-size: 12px; color: #555; }}
.waterfall {{ position: relative; }}
.row {{ box-sizing: border-box; display: flex; height: {row}px; align-items: center;
         border-top: 1px solid #f0f1f4; }}
.row.head {{ height: 25px; color: #6a7280; font-size: 11px; border-top: 0;
             border-bottom: 1px solid #d5d9df; }}
.row.error {{ background: #fdf1f1; }}
.name {{ width: {name_w}px; padding-left: 14px; box-sizing: border-box; display: flex;
         align-items: center; white-space: nowrap; overflow: hidden; }}
.svc {{ width: {svc_w}px; font-size: 12px; color: #6a7280; white-space: nowrap; }}
.time {{ width: {time_w}px; position: relative; height: 100%; }}
.indent {{ display: inline-block; flex: none; }}
.dot {{ display: inline-block; width: 9px; height: 9px; border-radius: 2px; margin-right: 6px;
        flex: none; }}
.sname {{ font-family: ui-monospace, monospace; font-size: 12.5px; }}
.task {{ margin-left: 7px; font-weight: 600; }}
.kind {{ margin-left: 7px; color: #8a919c; font-size: 11px; }}
.badge {{ margin-left: 7px; padding: 0 5px; border-radius: 3px; font-size: 11px;
          line-height: 16px; }}
.badge.link {{ background: #fbefd9; color: #8a5608; border: 1px solid #ecd09c; }}
.badge.err {{ background: {error}; color: #fff; font-weight: 600; }}
.bar {{ position: absolute; top: 9px; height: 12px; border-radius: 2px; }}
.note {{ position: absolute; top: 7px; font-size: 11.5px; color: #4d5561;
         white-space: nowrap; background: #fff; padding: 0 3px; }}
.error .note {{ background: #fdf1f1; }}
.errnote {{ color: {error}; font-weight: 600; }}
.tick {{ position: absolute; top: 5px; transform: translateX(-50%); white-space: nowrap; }}
svg.over {{ position: absolute; left: {over_left}px; top: 25px; pointer-events: none; }}
.grid {{ stroke: #e3e6ea; stroke-width: 1; }}
.linkline {{ fill: none; stroke: #c07a12; stroke-width: 1.4; stroke-dasharray: 4 3; }}
.legend {{ padding: 10px 14px 0; color: #4d5561; font-size: 12px; display: flex; gap: 22px;
           align-items: center; border-top: 1px solid #d5d9df; }}
.legend > span {{ display: flex; align-items: center; }}
.legend .badge {{ margin: 0 6px 0 0; }}
</style></head><body><div id="trace">
{title}<div class="waterfall">{grid}{body}{links}</div>
<div class="legend">{legend}</div>
</div></body></html>
"""


def shoot(page: Path, out: Path) -> None:
    from selenium import webdriver
    from selenium.webdriver.chrome.service import Service
    from selenium.webdriver.common.by import By

    options = webdriver.ChromeOptions()
    options.binary_location = "/usr/bin/chromium"
    for argument in ("--headless=new", "--no-sandbox", "--disable-gpu", "--window-size=1500,900"):
        options.add_argument(argument)
    driver = webdriver.Chrome(service=Service("/usr/bin/chromedriver"), options=options)
    try:
        driver.get(page.as_uri())
        out.write_bytes(driver.find_element(By.ID, "trace").screenshot_as_png)
    finally:
        driver.quit()


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--out", type=Path, default=ROOT / "docs" / "trace.png")
    ap.add_argument("--html", type=Path, help="keep the page here too")
    ap.add_argument("--rounds", type=int, default=3, help="workflows sent; the last is drawn")
    opts = ap.parse_args()
    folder = Path(tempfile.mkdtemp(prefix="trace-"))
    with own_redis() as url:
        os.environ.update(BEATQ_BROKER_URL=url + "/0", BEATQ_TEST_JOURNAL=str(folder))
        env = {**os.environ, "PYTHONPATH": str(ROOT), "OTEL_SERVICE_NAME": "worker"}
        env.update(
            BEATQ_TEST_INCLUDE="tests.otel_spans",
            BEATQ_TEST_OTEL_FILE=str(folder / "spans.jsonl"),
        )
        worker = start(["worker", "-c", "2", "-n", "demo@host"], env, folder / "w.log")
        try:
            spans = make_trace(env, opts.rounds)
        finally:
            worker.terminate()
            worker.wait(10)
    page = folder / "trace.html"
    page.write_text(waterfall_html(spans))
    if opts.html:
        opts.html.write_text(page.read_text())
    started = time.monotonic()
    shoot(page, opts.out)
    print(f"wrote {opts.out} ({len(spans)} spans; shot in {time.monotonic() - started:.1f} s)")


if __name__ == "__main__":
    main()
