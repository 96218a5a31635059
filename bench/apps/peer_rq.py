"""RQ job functions for the benchmark (bench/peers.py). RQ needs no app: workers import these
functions by their dotted path; the harness and the workers connect to BENCH_REDIS_URL."""

from bench.apps import stamps


def noop():
    return None


def noop_result():
    return 1


def done():
    stamps.done()


def late(eta):
    stamps.late(eta, at_once=True)


def tick():
    stamps.tick()
