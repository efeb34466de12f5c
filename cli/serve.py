"""``txmdb serve``: the lab's web application and HTTP API (DESIGN §12)."""

from __future__ import annotations

from typing import Optional

import typer

from txmdb.cli._common import catalog, echo, whole_option


def serve(ctx: typer.Context,
          host: str = typer.Option("127.0.0.1", "--host", help="Address to listen on (0.0.0.0: every interface; "
                                                                "put a TLS reverse proxy in front, docs/deployment.md)."),
          port: int = whole_option(8000, "--port", low=1, high=65535, metavar="PORT", help="Port to listen on."),
          root_path: str = typer.Option("", "--root-path", metavar="PREFIX",
                                        help="URL prefix the reverse proxy serves txmdb under, e.g. /txmdb "
                                             "(the proxy strips it)."),
          public_read: bool = typer.Option(False, "--public-read",
                                           help="Let anonymous visitors read (writing still needs an account)."),
          forwarded_allow_ips: str = typer.Option("127.0.0.1", "--forwarded-allow-ips", metavar="IPS",
                                                  help="Proxies whose X-Forwarded-Proto/-For are believed "
                                                       "(comma-separated; HTTPS there makes cookies Secure)."),
          max_upload_mb: Optional[int] = whole_option(None, "--max-upload-mb", low=1, high=1 << 20, metavar="MB",
                                                      help="Largest upload (default 256 MB)."),
          allowed_hosts: Optional[str] = typer.Option(None, "--allowed-hosts", metavar="NAMES",
                                                      help="Host names browsers reach this server by, comma-separated "
                                                           "('*' any). Needed with --public-read off the loopback "
                                                           "address. Default: any name; with --public-read on a "
                                                           "loopback address: localhost,127.0.0.1,[::1]."),
          workers: int = whole_option(1, "--workers", low=1, high=64, metavar="N",
                                      help="Server processes (one core each; a lab server: its number of cores)."),
          ) -> None:
    """Serve the catalogue's web pages and /api/v1 until stopped (Ctrl-C).

    On first start, with no account yet, it prints a one-time link that creates the first admin.
    """
    import secrets

    import uvicorn

    from txmdb.accounts import count_users
    from txmdb.errors import TxmdbError
    from txmdb.web.app import allowed_hosts as hosts_answered, create_app
    from txmdb.web.protocol import NoDelayH11Protocol

    if root_path and (not root_path.startswith("/") or root_path.endswith("/") or "//" in root_path):
        raise TxmdbError(f"--root-path {root_path!r}: expected a path like /txmdb (leading slash, none at the end)")
    hosts = hosts_answered(host, public_read, allowed_hosts)
    cat = catalog(ctx)
    setup = None if count_users(cat) else secrets.token_urlsafe(24)
    options = {} if max_upload_mb is None else {"max_upload_bytes": max_upload_mb << 20}
    app = create_app(cat, public_read=public_read, setup_token=setup, hosts=hosts, **options)
    shown = f"[{host}]" if ":" in host else host
    echo(f"txmdb serving on http://{shown}:{port}{root_path}/ (Ctrl-C stops it)")
    if setup:
        echo("No account exists yet. Open this link once to create the first admin "
             "(it works until then, in this server only):")
        typer.echo(f"    http://{shown}:{port}{root_path}/setup?token={setup}")
    options = dict(host=host, port=port, root_path=root_path, proxy_headers=True, forwarded_allow_ips=forwarded_allow_ips,
                   log_level="info", server_header=False, http=NoDelayH11Protocol)
    if workers == 1:
        uvicorn.run(app, **options)
        return
    # Worker processes build their own application from the environment (uvicorn imports it).
    import json
    import os

    from txmdb.web.app import SETTINGS_VARIABLE

    os.environ["TXMDB_URL"] = cat.engine.url.render_as_string(hide_password=False)
    os.environ["TXMDB_STORE"] = str(cat.store.root)
    settings = app.state.settings
    os.environ[SETTINGS_VARIABLE] = json.dumps({"public_read": public_read, "max_upload_bytes": settings.max_upload_bytes,
                                                "setup_token_hash": settings.setup_token_hash,
                                                "allowed_hosts": list(settings.allowed_hosts)})
    cat.engine.dispose()
    from txmdb.web.workers import run_workers

    run_workers(workers, **options)  # each worker listens on a socket of its own (SO_REUSEPORT)
