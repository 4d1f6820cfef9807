"""The websocket hub's sender: order kept, events gathered only while prompts wait."""

import asyncio
import json

from comfyserve.server import hub as hub_module
from comfyserve.server.hub import WebSocketHub


class FakeSocket:
    """Records what the hub sends; `wait_for(n)` returns once n messages arrived."""

    def __init__(self):
        self.types = []
        self._arrived = asyncio.Event()

    async def send_str(self, text):
        self.types.append(json.loads(text)["type"])
        self._arrived.set()

    async def wait_for(self, count):
        while len(self.types) < count:
            self._arrived.clear()
            await asyncio.wait_for(self._arrived.wait(), timeout=5)


def run_with_hub(scenario, busy):
    loop = asyncio.new_event_loop()
    hub = WebSocketHub()
    hub.busy = busy
    hub.attach_loop(loop)
    socket = FakeSocket()
    hub.add("c", socket)
    taken = []
    take_all = hub._take_all

    def recording_take_all():
        items = take_all()
        taken.append(len(items))
        return items

    hub._take_all = recording_take_all
    try:
        loop.run_until_complete(scenario(hub, socket))
    finally:
        hub._sender.cancel()
        loop.run_until_complete(asyncio.sleep(0))
        loop.close()
    return socket.types, taken


def test_while_prompts_wait_the_events_of_a_turn_arrive_together_and_in_order(monkeypatch):
    monkeypatch.setattr(hub_module, "BATCH_INTERVAL", 0.5)  # wide, so the thread's sends land in it

    async def scenario(hub, socket):
        loop = asyncio.get_running_loop()
        hub.send("first", {}, "c")
        await socket.wait_for(1)

        def worker():
            hub.send("second", {}, "c")
            for _ in range(3):  # give the sender turns of the loop in which it could deliver
                asyncio.run_coroutine_threadsafe(asyncio.sleep(0), loop).result()
            hub.send("third", {}, "c")
            hub.send("fourth", {}, "c")

        await asyncio.to_thread(worker)
        await socket.wait_for(4)

    types, taken = run_with_hub(scenario, busy=lambda: True)
    assert types == ["first", "second", "third", "fourth"]
    assert 3 in taken  # the worker's three events came in one turn of the sender


def test_with_nothing_waiting_events_go_out_at_once(monkeypatch):
    monkeypatch.setattr(hub_module, "BATCH_INTERVAL", 60)  # a sender that waited would time out

    async def scenario(hub, socket):
        for count, name in enumerate(("status", "executing", "executed"), start=1):
            await asyncio.to_thread(hub.send, name, {}, "c")
            await socket.wait_for(count)

    types, _ = run_with_hub(scenario, busy=lambda: False)
    assert types == ["status", "executing", "executed"]
