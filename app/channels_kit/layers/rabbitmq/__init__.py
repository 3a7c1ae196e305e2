"""The kit's channel layer on RabbitMQ (extra ``rabbitmq``)."""

from channels_kit.layers.rabbitmq.layer import RabbitMQChannelLayer

__all__ = ["RabbitMQChannelLayer"]
