"""``txmdb serve --workers N``: each worker process listens on a socket of its own (SO_REUSEPORT),
so the kernel spreads new connections over the workers instead of the first one awake taking them all."""

import pickle
import socket

import pytest

from txmdb.errors import TxmdbError
from txmdb.web.workers import _OwnSocket, reuse_port_socket, run_workers


def test_each_worker_unpickles_a_socket_of_its_own_on_the_same_address():
    holder = reuse_port_socket("127.0.0.1", 0)
    port = holder.getsockname()[1]
    sent = pickle.dumps([_OwnSocket("127.0.0.1", port)])  # what uvicorn's supervisor hands each worker
    first, second = pickle.loads(sent)[0], pickle.loads(sent)[0]
    try:
        assert first.fileno() != second.fileno()
        for sock in (first, second):
            assert sock.getsockname() == ("127.0.0.1", port)
            assert sock.getsockopt(socket.SOL_SOCKET, socket.SO_REUSEPORT) == 1
            sock.listen()
        # Only listening sockets take connections: the holder, bound alone, takes none.
        for _ in range(4):
            with socket.create_connection(("127.0.0.1", port), timeout=5):
                pass
        first.setblocking(False), second.setblocking(False)
        accepted = 0
        for sock in (first, second):
            while True:
                try:
                    sock.accept()[0].close()
                    accepted += 1
                except BlockingIOError:
                    break
        assert accepted == 4
    finally:
        for sock in (first, second, holder):
            sock.close()


def test_a_taken_address_is_one_error_before_any_worker_starts():
    taken = socket.socket()
    taken.bind(("127.0.0.1", 0))
    taken.listen()
    port = taken.getsockname()[1]
    try:
        with pytest.raises(TxmdbError, match=f"cannot listen on 127.0.0.1:{port}: Address already in use"):
            run_workers(2, host="127.0.0.1", port=port)
    finally:
        taken.close()
