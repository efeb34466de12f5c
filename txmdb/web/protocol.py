"""The HTTP/1.1 protocol ``txmdb serve`` runs uvicorn with."""

from __future__ import annotations

import socket

from uvicorn.protocols.http.h11_impl import H11Protocol


class NoDelayH11Protocol(H11Protocol):
    """uvicorn's h11 protocol with Nagle's algorithm off on every connection.

    asyncio turns Nagle off only for sockets whose ``proto`` is TCP; the listening socket uvicorn
    hands to its ``--workers`` processes arrives with ``proto`` 0, so there every small answer
    (headers and body written separately) waited ~40 ms for the client's delayed ACK.
    """

    def connection_made(self, transport) -> None:
        sock = transport.get_extra_info("socket")
        if sock is not None and sock.family in (socket.AF_INET, socket.AF_INET6):
            sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        super().connection_made(transport)
