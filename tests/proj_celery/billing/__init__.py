"""A sub-package app of the project (as a Django app is): its tasks.py is found by
`app.autodiscover_tasks`, not listed anywhere."""
