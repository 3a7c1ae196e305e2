"""Chat history and background-task records."""

from __future__ import annotations

import uuid

from django.db import IntegrityError, models, transaction

ROOM_PATTERN = r"[A-Za-z0-9_-]{1,64}"


class Message(models.Model):
    """One chat message, kept so the page can show recent history."""

    room = models.CharField(max_length=64, db_index=True)
    text = models.TextField()
    created = models.DateTimeField(auto_now_add=True, db_index=True)
    # The relayed WebSocket event that posted it: the same for every attempt of that event,
    # so a post whose worker died halfway and that is sent again is stored once.
    event_id = models.CharField(max_length=200, null=True, blank=True, unique=True)

    class Meta:
        ordering = ["-created", "-id"]

    @classmethod
    def post(cls, room: str, text: str, event_id: str | None = None) -> Message:
        """Store a message, once per ``event_id``: a second attempt gets the stored one back."""
        if event_id is None:
            return cls.objects.create(room=room, text=text)
        try:
            with transaction.atomic():
                return cls.objects.create(room=room, text=text, event_id=event_id)
        except IntegrityError:
            return cls.objects.get(event_id=event_id)

    def as_event(self) -> dict:
        """The message as the WebSocket contract sends it."""
        return {
            "type": "message",
            "room": self.room,
            "message": self.text,
            "id": self.pk,
            "created": self.created.isoformat(),
        }


class Task(models.Model):
    """A background job queued on a worker channel and run by a worker."""

    class Channel(models.TextChoices):
        """The background channels a task can go to (the split of the worker tiers)."""

        THUMBNAIL = "thumbnail"  # slow jobs: their own workers (`worker-slow`)
        TASKS = "tasks"  # quick jobs: the general workers (`worker`)

    class Status(models.TextChoices):
        PENDING = "pending"
        RUNNING = "running"
        DONE = "done"
        FAILED = "failed"

    id = models.UUIDField(primary_key=True, default=uuid.uuid4, editable=False)
    channel = models.CharField(max_length=64, choices=Channel.choices, default=Channel.THUMBNAIL)
    payload = models.JSONField(default=dict)
    status = models.CharField(max_length=16, choices=Status.choices, default=Status.PENDING)
    result = models.JSONField(null=True, blank=True)
    worker = models.CharField(max_length=128, blank=True)
    created = models.DateTimeField(auto_now_add=True)
    started = models.DateTimeField(null=True, blank=True)
    finished = models.DateTimeField(null=True, blank=True)

    def as_json(self) -> dict:
        """The task as ``GET /tasks/<id>`` shows it."""
        return {
            "id": str(self.id),
            "channel": self.channel,
            "status": self.status,
            "payload": self.payload,
            "result": self.result,
            "worker": self.worker,
            "created": self.created.isoformat(),
            "started": self.started.isoformat() if self.started else None,
            "finished": self.finished.isoformat() if self.finished else None,
        }
