"""Tasks for tests/test_guide_canvas.py: Celery's canvas guide, run by real workers."""

from beatq import chain, chord, group

from . import app, record


@app.task
def gc_tsum(numbers):
    return sum(numbers)


@app.task
def gc_hello():
    """Takes nothing: a task object put in a chord header as it is."""
    return "hello"


@app.task
def gc_add_debug(x, y, debug=False):
    return {"sum": x + y, "debug": debug}


@app.task(bind=True)
def gc_ids(self, i):
    """Celery's integration `ids` task: (root_id, parent_id, i)."""
    return [self.request.root_id, self.request.parent_id, i]


@app.task(bind=True)
def gc_collect_ids(self, results, i):
    """A chord body that also reports what its header returned."""
    return [results, [self.request.root_id, self.request.parent_id, i]]


@app.task
def gc_note(value, tag=""):
    record("gc", f"{tag}:{value}")
    return value


@app.task
def gc_log_error(request, exc, traceback):
    """A new-style errback: (request, exc, traceback)."""
    record("gc_errors", f"{request.id}:{type(exc).__name__}:{exc}")


# -- replace ------------------------------------------------------------------------------
@app.task(bind=True)
def gc_replace_add(self, x, y):
    """Replaced by add.s(x, y): its result becomes the replacement's."""
    from .tasks import add

    record("gc", f"replacing:{self.request.id}")
    return self.replace(add.s(x, y))


@app.task(bind=True)
def gc_replace_chain(self, x):
    """Replaced by a chain of two adds (x + 1 + 10)."""
    from .tasks import add

    return self.replace(chain(add.s(x, 1), add.s(10)))


@app.task(bind=True)
def gc_replace_group(self, x):
    """Replaced by a group: its result is the group's list."""
    from .tasks import add, mul

    return self.replace(group(add.s(x, 1), mul.s(x, 2)))


@app.task(bind=True)
def gc_replace_failing(self, message):
    """Replaced by a task that fails."""
    from .tasks import fail

    return self.replace(fail.si(message))


@app.task(bind=True)
def gc_replace_after(self, x):
    """Would journal past replace() if replace returned: it must not."""
    from .tasks import add

    self.replace(add.s(x, 100))
    record("gc", "after-replace")


# -- children -----------------------------------------------------------------------------
@app.task
def gc_spawn(n):
    """Sends n adds from inside the task: they are its children."""
    from .tasks import add

    for i in range(n):
        add.delay(i, i)
    return n


@app.task
def gc_spawn_many(n):
    """Sends n adds in one apply_many, and one more not counted (add_to_parent=False)."""
    from .tasks import add

    add.apply_many([(i, i) for i in range(n)])
    add.apply_many([(n, n)], add_to_parent=False)
    return n


@app.task
def gc_spawn_group(n):
    """Applies a group from inside the task: one child, the group's result."""
    from .tasks import add

    group(add.s(i, i) for i in range(n))()
    return n


@app.task(bind=True)
def gc_replace_chord(self, x):
    """Replaced by a chord: its result is the body's ((x + 1) + (x + 2))."""
    from .tasks import add

    return self.replace(chord([add.s(x, 1), add.s(x, 2)], gc_tsum.s()))
