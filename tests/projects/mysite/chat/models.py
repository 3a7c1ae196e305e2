from django.db import models


class Task(models.Model):
    """Work done in the background, on the 'background-tasks' channel."""

    number = models.IntegerField()
    status = models.CharField(max_length=16, default='queued')
    result = models.IntegerField(null=True)
    created = models.DateTimeField(auto_now_add=True)
