"""The old name of ``channels_kit.layers.memory_inspector``, kept importable.

It holds no layer: Channels' in-memory layer is ``channels.layers.InMemoryChannelLayer``;
the kit only inspects it (``MemoryInspector``).
"""

from channels_kit.layers.memory_inspector import IN_MEMORY_NOTE, MemoryInspector

__all__ = ["IN_MEMORY_NOTE", "MemoryInspector"]
