"""The Celery app. Queues: "gpu" (fine-tunes, sampling) and "default" (scoring, exports)."""

import os

from celery import Celery

os.environ.setdefault("DJANGO_SETTINGS_MODULE", "palmsweb.settings")

app = Celery("palmsweb")
app.config_from_object("django.conf:settings", namespace="CELERY")
app.autodiscover_tasks()
