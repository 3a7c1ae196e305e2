"""Settings of a project deployed by the kit: ``DJANGO_SETTINGS_MODULE=channels_kit.project.settings``.

The project's own settings module (``KIT_PROJECT_SETTINGS``, found in its ``manage.py``),
with the kit's production settings over it (``channels_kit.project.overlay``).
"""

from channels_kit.project.overlay import apply

apply(globals())
