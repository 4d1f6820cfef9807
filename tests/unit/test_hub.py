"""The websocket hub's outbox: batched messages wait for a wake, and order is kept."""

import asyncio

from comfyserve.server.hub import WebSocketHub


class FakeSocket:
    def __init__(self):
        self.received = []

    async def send_str(self, text):
        self.received.append(text)


def test_batched_messages_wait_for_a_waking_one_and_keep_their_order():
    loop = asyncio.new_event_loop()
    try:
        hub = WebSocketHub()
        hub.attach_loop(loop)
        socket = FakeSocket()
        hub.add("c", socket)
        settle = lambda: loop.run_until_complete(asyncio.sleep(0.01))  # noqa: E731 - a few loop turns
        hub.send("execution_start", {}, "c", wake=False)
        hub.send("progress_state", {}, "c", wake=False)
        settle()
        assert socket.received == []  # nothing woke the sender yet
        hub.send("executing", {"node": "1"}, "c")
        settle()
        assert [m.split('"')[3] for m in socket.received] == ["execution_start", "progress_state", "executing"]
        hub.send("executed", {}, "c", wake=False)
        hub.wake()
        settle()
        assert len(socket.received) == 4 and '"executed"' in socket.received[-1]
        hub.wake()  # nothing queued: a no-op
        settle()
        assert len(socket.received) == 4
    finally:
        hub._sender.cancel()
        loop.run_until_complete(asyncio.sleep(0))
        loop.close()
