"""The kit's ``manage.py`` commands, one module each.

- ``runworker``: a worker (``KitWorker``) for the routed channels, filtered by globs; relay mode.
- ``runall``: one-process mode, Daphne and the workers in one process.
- ``channels_status``: queue depth and age per channel and shard, and the live workers.
- ``kit_project``: what the kit found in the project it deploys.
"""
