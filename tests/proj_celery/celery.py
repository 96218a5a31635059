"""The app, as a Celery project's proj/celery.py makes it."""

from beatq import Celery

from . import reusable  # noqa: F401 (a shared task made before the app: it binds to it)

app = Celery("proj_celery", include=["tests.proj_celery.tasks"])
app.config_from_object("tests.proj_celery.celeryconfig")

from . import receivers  # noqa: E402, F401 (the project's signal receivers)
