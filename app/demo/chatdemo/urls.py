"""URLs of the demo project."""

from django.urls import path, re_path

from channels_kit.health import healthz, readyz
from chat import views
from chat.models import ROOM_PATTERN

urlpatterns = [
    path("", views.index, name="index"),
    path("healthz", healthz, name="healthz"),
    path("readyz", readyz, name="readyz"),
    re_path(rf"^history/(?P<room>{ROOM_PATTERN})/$", views.history, name="history"),
    path("tasks/", views.create_task, name="create-task"),
    path("tasks/<uuid:task_id>", views.task_detail, name="task-detail"),
]
