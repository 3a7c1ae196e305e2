"""URLs of the demo project."""

from django.contrib.auth import views as auth_views
from django.urls import path, re_path

from channels_kit.health import healthz, readyz
from chat import longpoll, views
from chat.models import ROOM_PATTERN

urlpatterns = [
    path("", views.index, name="index"),
    path("healthz", healthz, name="healthz"),
    path("readyz", readyz, name="readyz"),
    path("whoami", views.whoami, name="whoami"),
    path("io/", views.io, name="io"),
    re_path(rf"^history/(?P<room>{ROOM_PATTERN})/$", views.history, name="history"),
    re_path(rf"^poll/(?P<room>{ROOM_PATTERN})/$", longpoll.poll, name="poll"),
    path("accounts/login/", auth_views.LoginView.as_view(), name="login"),
    path("accounts/logout/", auth_views.LogoutView.as_view(), name="logout"),
    path("tasks/", views.create_task, name="create-task"),
    path("tasks/<uuid:task_id>", views.task_detail, name="task-detail"),
]
