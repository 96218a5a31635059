"""A project written the way Celery projects are, with `celery` replaced by `beatq`.

    proj_celery/celery.py         app = Celery(...), config_from_object, autodiscover_tasks,
                                  add_periodic_task in an on_after_configure receiver
    proj_celery/celeryconfig.py   lower-case settings
    proj_celery/reusable.py       a @shared_task made before any app exists
    proj_celery/base.py           a base= Task class with Celery's hooks
    proj_celery/tasks.py          @shared_task tasks, a class-based task, update_state
    proj_celery/billing/tasks.py  a sub-package app's @shared_task tasks (autodiscovered)
    proj_celery/receivers.py      signal receivers connected by the project

Started by the tests as `beatq -A tests.proj_celery worker [-B]`. Its tasks, hooks and
receivers write to the test's journal (tests.journal), with the pid they ran in.
"""

from .celery import app as celery_app

__all__ = ["celery_app"]
