"""The kit's ``manage.py`` commands (Django finds them in ``commands``).

- ``commands``: ``runworker``, ``runall``, ``channels_status``, ``kit_project``.
"""
