"""``txmdb serve``'s HTTP protocol turns Nagle's algorithm off, on the sockets uvicorn's workers get too."""

import asyncio
import socket

from uvicorn.config import Config
from uvicorn.server import ServerState

from txmdb.web.protocol import NoDelayH11Protocol


async def _nodelay_of_accepted(protocol_class) -> int:
    listener = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    listener.bind(("127.0.0.1", 0))
    listener.listen()
    # What a `--workers` process holds: the same listening socket without its protocol number.
    shared = socket.fromfd(listener.fileno(), socket.AF_INET, socket.SOCK_STREAM)
    listener.close()
    assert shared.proto == 0
    config = Config(app=lambda scope, receive, send: None, http=protocol_class, lifespan="off")
    config.load()
    seen = asyncio.get_running_loop().create_future()

    class Recording(protocol_class):
        def connection_made(self, transport):
            super().connection_made(transport)
            sock = transport.get_extra_info("socket")
            seen.set_result(sock.getsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY))

    server = await asyncio.get_running_loop().create_server(
        lambda: Recording(config=config, server_state=ServerState(), app_state={}), sock=shared)
    try:
        _, writer = await asyncio.open_connection(*shared.getsockname())
        value = await asyncio.wait_for(seen, 10)
        writer.close()
        return value
    finally:
        server.close()


def test_accepted_connections_have_nagle_off_even_from_a_shared_listening_socket():
    from uvicorn.protocols.http.h11_impl import H11Protocol

    assert asyncio.run(_nodelay_of_accepted(H11Protocol)) == 0  # why the subclass exists
    assert asyncio.run(_nodelay_of_accepted(NoDelayH11Protocol)) != 0
