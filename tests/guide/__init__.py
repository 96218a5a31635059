"""Projects written from Celery's user guide pages, with `celery` replaced by `beatq`, that
the tests start as real `beatq -A tests.guide.MODULE worker|beat` processes."""
