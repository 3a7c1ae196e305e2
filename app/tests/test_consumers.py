"""The kit's consumer helpers, run by Channels' own test client."""

from __future__ import annotations

import asyncio

import channels.consumer
import pytest
from channels.generic.websocket import AsyncWebsocketConsumer
from channels.testing import WebsocketCommunicator

from channels_kit.consumers import NoConnectionCheckMixin


class Echo(AsyncWebsocketConsumer):
    async def receive(self, text_data=None, bytes_data=None):
        await self.send(text_data=text_data)


class LeanEcho(NoConnectionCheckMixin, Echo):
    pass


async def echo_ten(consumer) -> None:
    communicator = WebsocketCommunicator(consumer.as_asgi(), "/ws/")
    connected, _ = await communicator.connect()
    assert connected
    for n in range(10):
        await communicator.send_to(text_data=str(n))
        assert await communicator.receive_from() == str(n)
    await communicator.disconnect()


@pytest.mark.parametrize(("consumer", "checks"), [(Echo, 12), (LeanEcho, 0)])
def test_the_mixin_leaves_out_the_check_before_each_message(monkeypatch, consumer, checks):
    done: list[None] = []
    real_check = channels.consumer.aclose_old_connections

    async def counted_check() -> None:
        done.append(None)
        await real_check()

    # The name Channels' dispatch calls (the disconnect handler's own check is another).
    monkeypatch.setattr(channels.consumer, "aclose_old_connections", counted_check)
    asyncio.run(echo_ten(consumer))
    # Channels: one before connect, each of the 10 frames and the disconnect; the mixin: none.
    assert len(done) == checks


def test_a_message_without_a_handler_is_still_an_error():
    async def unknown() -> None:
        communicator = WebsocketCommunicator(LeanEcho.as_asgi(), "/ws/")
        await communicator.connect()
        await communicator.send_input({"type": "no.such.handler"})
        await communicator.wait()

    with pytest.raises(ValueError, match=r"No handler for message type no\.such\.handler"):
        asyncio.run(unknown())
