from django.db import migrations, models


class Migration(migrations.Migration):
    dependencies = [
        ("chat", "0002_task_channel_running"),
    ]

    operations = [
        migrations.AddField(
            model_name="message",
            name="event_id",
            field=models.CharField(blank=True, max_length=200, null=True, unique=True),
        ),
    ]
