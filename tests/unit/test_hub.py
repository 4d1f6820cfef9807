"""The websocket hub's batching: per-socket order, and corked sends on real TCP sockets."""

import socket

from comfyserve.server.hub import WebSocketHub, _corked


def test_a_batch_keeps_each_sockets_order_and_broadcasts_reach_everyone():
    hub = WebSocketHub()
    one, two = object(), object()
    hub.sockets = {"one": one, "two": two, "gone": None}
    del hub.sockets["gone"]
    batch = [("s1", None), ("to-one", "one"), ("s2", None), ("to-two", "two"), ("lost", "nobody")]
    assert hub._by_socket(batch) == {one: ["s1", "to-one", "s2"], two: ["s1", "s2", "to-two"]}


def test_corked_holds_tcp_segments_only_inside_the_block():
    with socket.create_server(("127.0.0.1", 0)) as server:
        client = socket.create_connection(server.getsockname())
        peer, _ = server.accept()
        with client, peer:
            cork = socket.TCP_CORK
            with _corked(peer):
                assert peer.getsockopt(socket.IPPROTO_TCP, cork) == 1
                peer.sendall(b"a")
                peer.sendall(b"b")
            assert peer.getsockopt(socket.IPPROTO_TCP, cork) == 0
            received = b""
            while len(received) < 2:
                received += client.recv(16)
            assert received == b"ab"


def test_corked_is_a_no_op_without_a_tcp_socket():
    with _corked(None):
        pass
    left, right = socket.socketpair()
    with left, right, _corked(left):
        left.sendall(b"x")
        assert right.recv(1) == b"x"
