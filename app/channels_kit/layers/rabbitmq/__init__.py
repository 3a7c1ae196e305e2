"""The kit's channel layer on RabbitMQ (extra ``rabbitmq``).

- ``layer``: ``RabbitMQChannelLayer``, one queue per channel, through aiormq.
- ``inspector``: queue figures, and worker states in a stream, for ``channels_status``
  and ``/metrics``.
"""

from channels_kit.layers.rabbitmq.layer import RabbitMQChannelLayer

__all__ = ["RabbitMQChannelLayer"]
