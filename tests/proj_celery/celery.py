"""The app, as a Celery project's proj/celery.py makes it."""

from beatq import Celery

from . import reusable  # noqa: F401 (a shared task made before the app: it binds to it)

app = Celery("proj_celery")
app.config_from_object("tests.proj_celery.celeryconfig")
# tests/proj_celery/tasks.py and tests/proj_celery/billing/tasks.py, imported as a worker
# or a beat starts
app.autodiscover_tasks(["tests.proj_celery", "tests.proj_celery.billing"])


@app.on_after_configure.connect
def setup_periodic_tasks(sender, **kwargs):
    from .billing.tasks import settle

    sender.add_periodic_task(0.5, settle.s("half-second"), name="settle every half second")


from . import receivers  # noqa: E402, F401 (the project's signal receivers)
