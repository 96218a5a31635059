"""Helpers under Celery's names (`celery.utils.log` becomes `beatq.utils.log`)."""
