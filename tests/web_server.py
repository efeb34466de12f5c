"""A catalogue served by a real ``txmdb serve`` process, for the API and security tests.

:func:`served_catalogue` makes a catalogue on SQLite or PostgreSQL (optionally filled by
:func:`txmdb.demo.populate_demo` on small tomograms); :class:`Served` runs the CLI against it,
adds accounts with API tokens, and starts and stops servers on free ports, each logging to a
file the tests read (passwords must never appear there).
"""

from __future__ import annotations

import contextlib
import os
import re
import socket
import subprocess
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path

from tests.conftest import _drop_reporting_role, _fresh_pg_url, as_catalogue_owner

TXMDB = Path(sys.executable).with_name("txmdb")
ROLES = ("viewer", "editor", "admin")


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@dataclass
class Account:
    name: str
    role: str
    password: str
    token: str


@dataclass
class Server:
    process: subprocess.Popen
    base: str
    log_path: Path

    def log(self) -> str:
        return self.log_path.read_text(errors="replace")


@dataclass
class Served:
    """A catalogue (``url``, ``store``) and the servers started on it."""

    url: str
    store: Path
    root: Path
    backend: str
    accounts: dict[str, Account] = field(default_factory=dict)
    servers: list[Server] = field(default_factory=list)

    def cli(self, *args: str, input: str | None = None, text: bool = True) -> subprocess.CompletedProcess:
        """``txmdb --db URL --store STORE ARGS…`` in a subprocess (stdout a pipe, as a script sees it)."""
        return subprocess.run([str(TXMDB), "--db", self.url, "--store", str(self.store), *args], input=input,
                              capture_output=True, text=text, timeout=300)

    def add_account(self, role: str, name: str | None = None, *, token_days: int | None = None) -> Account:
        """An account made by ``txmdb user add`` (password on stdin) with one API token."""
        name = name or role
        password = f"{name}-password-{len(self.accounts)}"
        added = self.cli("user", "add", name, "--role", role, "--password-stdin", input=password + "\n")
        assert added.returncode == 0, added.stderr
        args = ["user", "token", name] + (["--expires-days", str(token_days)] if token_days else [])
        issued = self.cli(*args)
        assert issued.returncode == 0, issued.stderr
        self.accounts[name] = Account(name, role, password, issued.stdout.splitlines()[-1])
        return self.accounts[name]

    def start(self, *options: str, timeout: float = 60) -> Server:
        """``txmdb serve OPTIONS`` on a free port, once /api/v1/health answers."""
        import httpx

        port = free_port()
        log_path = self.root / f"serve-{port}.log"
        log = open(log_path, "w")
        process = subprocess.Popen(
            [str(TXMDB), "--db", self.url, "--store", str(self.store), "serve", "--port", str(port), *options],
            stdout=log, stderr=subprocess.STDOUT, env={**os.environ, "PYTHONUNBUFFERED": "1"})
        log.close()
        server = Server(process, f"http://127.0.0.1:{port}", log_path)
        self.servers.append(server)
        deadline = time.monotonic() + timeout
        while True:
            try:
                if httpx.get(server.base + "/api/v1/health", timeout=2).status_code == 200:
                    return server
            except httpx.TransportError:
                pass
            assert process.poll() is None, server.log()
            assert time.monotonic() < deadline, f"txmdb serve did not answer within {timeout} s:\n{server.log()}"
            time.sleep(0.2)

    def stop(self) -> None:
        for server in self.servers:
            server.process.terminate()
            try:
                server.process.wait(timeout=30)
            except subprocess.TimeoutExpired:
                server.process.kill()
                server.process.wait()
        self.servers.clear()

    def client(self, server: Server, account: str | None = None, **options):
        """An httpx client of ``server``; with ``account`` it sends that account's API token."""
        import httpx

        headers = {"Authorization": f"Bearer {self.accounts[account].token}"} if account else {}
        headers.update(options.pop("headers", {}))
        return httpx.Client(base_url=server.base, headers=headers, follow_redirects=False, timeout=60, **options)


@contextlib.contextmanager
def served_catalogue(request, tmp_path_factory, backend: str, *, populate: bool = False):
    """A new catalogue at schema head on ``backend``; with ``populate`` the demo's samples,
    cells, cycling runs, spectra and two analysed 16³ tomograms. Servers stop and the
    database goes at the end."""
    from txmdb.catalog import open_catalog
    from txmdb.db.migrate import upgrade

    root = tmp_path_factory.mktemp(f"web-{backend}")
    drop = admin_url = None
    if backend == "sqlite":
        url = f"sqlite:///{root / 'catalogue.db'}"
    else:
        server = request.getfixturevalue("pg_server")
        admin_url, drop = _fresh_pg_url(server)
        url = as_catalogue_owner(admin_url)
    catalog = open_catalog(url, root / "store", check=False)
    upgrade(catalog.engine)
    if populate:
        from txmdb.demo import populate_demo

        populate_demo(catalog, root / "raw", size=16, n_energies=30, echo=lambda _: None)
    catalog.engine.dispose()
    served = Served(url, root / "store", root, backend)
    try:
        yield served
    finally:
        served.stop()
        if drop is not None:
            drop()
            _drop_reporting_role(request.getfixturevalue("pg_server"), admin_url)


def inline_scripts(html: str) -> list[str]:
    """The <script> elements of a page that run code without a src (a CSP without
    'unsafe-inline' blocks them); JSON data blocks do not count."""
    found = []
    for attrs, body in re.findall(r"<script\b([^>]*)>(.*?)</script>", html, re.S | re.I):
        if "src=" in attrs.lower():
            continue
        if re.search(r"type\s*=\s*[\"']application/(ld\+)?json[\"']", attrs, re.I):
            continue
        found.append(body)
    return found
