"""The WAOOAW Platform Portal project package: settings, URLs, ASGI, Celery and the shell."""

from portal.celery import app as celery_app

__all__ = ["celery_app"]
