"""Test helpers for the kit's users and for anyone writing a channel layer backend.

- ``conformance``: ``ChannelLayerConformance``, the contract every backend of the kit
  meets, as pytest tests to run against a layer of your own. Needs pytest (extra
  ``testing``).
"""

from channels_kit.testing.conformance import ChannelLayerConformance

__all__ = ["ChannelLayerConformance"]
