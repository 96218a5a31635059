"""What `typing` (arguments checked at send) costs a call: `check_call` alone, and `delay()`
on memory:// with typing on and off, interleaved in one process (best of 7).

    python bench/profile/typing_cost.py [TREE]
"""

import sys
import timeit

sys.path.insert(0, sys.argv[1] if len(sys.argv) > 1 else ".")
from beatq import Beatq  # noqa: E402

app = Beatq("t", broker="memory://typingcost")


@app.task(ignore_result=True)
def add(x, y):
    return x + y


@app.task(ignore_result=True, typing=False)
def add_loose(x, y):
    return x + y


@app.task
def kw(x, y=1, *, z=2):
    return x


n = 5000
res = {"on": [], "off": []}
for _ in range(7):
    for name, fn in (("on", lambda: add.delay(1, 2)), ("off", lambda: add_loose.delay(1, 2))):
        res[name].append(timeit.timeit(fn, number=n) / n * 1e6)
        app.broker.store.__init__()
print(f"delay() typing on: {min(res['on']):.2f} us, off: {min(res['off']):.2f} us")


def per_call(fn, number=20000):
    return min(timeit.repeat(fn, number=number, repeat=5)) / number * 1e6


print(f"check_call, positional fast path: {per_call(lambda: add.check_call((1, 2), {})):.2f} us")
print(f"check_call, binding keywords: {per_call(lambda: kw.check_call((1,), {'z': 3})):.2f} us")
