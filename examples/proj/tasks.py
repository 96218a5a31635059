"""The example project's tasks."""

from .beatq import app


@app.task
def add(x, y):
    return x + y


@app.task
def mul(x, y):
    return x * y


@app.task
def xsum(numbers):
    return sum(numbers)


@app.task(bind=True, max_retries=3, default_retry_delay=2)
def fetch(self, url):
    """Pretend to fetch `url`; retry when it 'fails'."""
    if url.startswith("flaky:") and self.request.retries < 2:
        raise self.retry(countdown=0.5)
    return f"fetched {url} after {self.request.retries} retries"


@app.task
def error_handler(task_id):
    """An old-style errback: gets the failed task's id."""
    print(f"task {task_id} failed")
