"""Make docs/dashboard-charts.png: a few minutes of real work, then the dashboard's charts.

    python docs/charts_shot.py [--minutes 5] [--out docs/dashboard-charts.png]

A private redis-server; a beat (a 1-s and a 5-s entry), a worker (-P threads -c 4) and the
dashboard started through the CLI on tests.proj with 5-s samples kept six minutes
(BEATQ_TEST_TIMELINE); this process sends a load that rises and falls, with failures and a
backlog in the middle, then Debian's headless Chromium photographs the charts' section.
"""

from __future__ import annotations

import argparse
import math
import os
import random
import re
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from bench.core import own_redis  # noqa: E402

SCHEDULE = """timezone: UTC
schedules:
  tick: {task: tests.proj.tasks.add, every: 1s, args: [1, 1]}
  report: {task: tests.proj.tasks.sleep, every: 5s, args: [0.3, report]}
"""


def start(args: list[str], env: dict[str, str], log: Path) -> subprocess.Popen:
    argv = [sys.executable, "-m", "beatq", "-A", "tests.proj", *args]
    return subprocess.Popen(argv, env=env, stdout=log.open("w"), stderr=subprocess.STDOUT)


def shoot(url: str, out: Path) -> None:
    from selenium import webdriver
    from selenium.webdriver.chrome.service import Service
    from selenium.webdriver.common.by import By

    options = webdriver.ChromeOptions()
    options.binary_location = "/usr/bin/chromium"
    for argument in ("--headless=new", "--no-sandbox", "--disable-gpu", "--window-size=1440,900"):
        options.add_argument(argument)
    driver = webdriver.Chrome(service=Service("/usr/bin/chromedriver"), options=options)
    try:
        driver.get(url)
        time.sleep(2)  # the stream's first push redraws at the window's width
        out.write_bytes(driver.find_element(By.ID, "timeline-section").screenshot_as_png)
    finally:
        driver.quit()


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--minutes", type=float, default=5.0)
    ap.add_argument("--out", type=Path, default=ROOT / "docs" / "dashboard-charts.png")
    opts = ap.parse_args()
    folder = Path(tempfile.mkdtemp(prefix="charts-"))
    (folder / "jobs.yaml").write_text(SCHEDULE)
    with own_redis() as url:
        env = {**os.environ, "PYTHONPATH": str(ROOT), "BEATQ_BROKER_URL": url + "/0"}
        env.update(BEATQ_TEST_TIMELINE="5,360", BEATQ_TEST_JOURNAL=str(folder))
        os.environ.update(env)
        procs = [
            start(["beat", "-s", str(folder / "jobs.yaml")], env, folder / "beat.log"),
            start(["worker", "-P", "threads", "-c", "4", "-n", "demo@host"], env, folder / "w.log"),
            start(["dashboard", "--port", "0"], env, folder / "dash.log"),
        ]
        from tests.proj.tasks import add, fail, sleep

        try:
            began = time.time()
            while (elapsed := time.time() - began) < opts.minutes * 60:
                phase = elapsed / (opts.minutes * 60)
                rate = 20 + 60 * math.sin(math.pi * phase) ** 2  # tasks a second
                for _ in range(int(rate)):
                    sleep.delay(random.lognormvariate(math.log(0.02), 0.6), "demo")
                if random.random() < 0.15 + 0.5 * (0.45 < phase < 0.55):
                    fail.delay("demo")
                if 0.6 < phase < 0.63:  # a burst the worker drains over the next minute
                    for _ in range(150):
                        add.delay(1, 2)
                time.sleep(1)
            dash = re.search(r"dashboard on (http://\S+/)", (folder / "dash.log").read_text())
            assert dash, (folder / "dash.log").read_text()
            steady = threading.Event()  # the work goes on while the picture is taken

            def keep_sending() -> None:
                while not steady.wait(1):
                    for _ in range(20):
                        sleep.delay(random.lognormvariate(math.log(0.02), 0.6), "demo")

            threading.Thread(target=keep_sending, daemon=True).start()
            shoot(dash[1], opts.out)
            steady.set()
            print(f"wrote {opts.out}")
        finally:
            for proc in procs:
                proc.terminate()
                proc.wait(10)


if __name__ == "__main__":
    main()
