"""``txmdb serve --workers N``: N server processes, each listening on a socket of its own.

uvicorn's own ``--workers`` share one listening socket, and asyncio accepts every waiting
connection at once in whichever process wakes first: a burst of new connections (a browser
opening several, the benchmark's 20 clients) lands on one process while the others idle (19 of
20 keep-alive connections on one of two workers in ``benchmarks/bench_web.py``, so one core
queued 19 clients). Here every worker binds its own socket to the address with
``SO_REUSEPORT`` and the kernel spreads new connections over them. uvicorn's supervisor still
starts, watches and restarts the workers.
"""

from __future__ import annotations

import socket

from txmdb.errors import TxmdbError


def reuse_port_socket(host: str, port: int) -> socket.socket:
    """A TCP socket bound to ``host:port`` that other sockets with ``SO_REUSEPORT`` may share."""
    sock = socket.socket(socket.AF_INET6 if ":" in host else socket.AF_INET, socket.SOCK_STREAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEPORT, 1)
    try:
        sock.bind((host, port))
    except OSError:
        sock.close()
        raise
    return sock


class _OwnSocket:
    """Stands for a listening socket in the list uvicorn's supervisor hands each worker: it is
    pickled into the worker process and comes out there as a new socket of that worker's own."""

    def __init__(self, host: str, port: int):
        self.host, self.port = host, port

    def __reduce__(self):
        return reuse_port_socket, (self.host, self.port)


def run_workers(workers: int, **options) -> None:
    """Serve the application of :func:`txmdb.web.app.app_from_environment` in ``workers`` processes
    (``options``: uvicorn's, with ``host`` and ``port``) until stopped."""
    import uvicorn
    from uvicorn.supervisors import Multiprocess

    config = uvicorn.Config("txmdb.web.app:app_from_environment", factory=True, workers=workers, **options)
    try:
        # Bound, never listening: it holds the address (and says at once when it is taken)
        # while the workers' sockets, bound beside it, take the connections.
        holder = reuse_port_socket(config.host, config.port)
    except OSError as exc:
        raise TxmdbError(f"cannot listen on {config.host}:{config.port}: {exc.strerror or exc}") from None
    try:
        Multiprocess(config, sockets=[_OwnSocket(config.host, config.port)]).run()
    except KeyboardInterrupt:
        pass
    finally:
        holder.close()
