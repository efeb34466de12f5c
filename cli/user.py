"""``txmdb user …``: web accounts and their API tokens (DESIGN §12)."""

from __future__ import annotations

import sys
from pathlib import Path
from typing import Optional

import typer

from txmdb.cli._common import (
    FormatOption, OutputFormat, OutputOption, UsageGroup, catalog, echo, emit_table, whole_option,
)
from txmdb.vocabulary import MAX_TOKEN_DAYS, Role

app = typer.Typer(cls=UsageGroup, help="Web accounts (viewer, editor, admin) and their API tokens.", no_args_is_help=True)


def _password(from_stdin: bool) -> str:
    """The new password: the first line of stdin, or typed twice at a prompt (never echoed)."""
    if from_stdin:
        return sys.stdin.readline().rstrip("\r\n")
    return typer.prompt("Password", hide_input=True, confirmation_prompt=True)


@app.command("add")
def add(ctx: typer.Context, name: str = typer.Argument(..., help="Account name (letters, digits, . _ -)."),
        role: Role = typer.Option(..., "--role", help="What the account may do: viewers read; editors also ingest "
                                                      "and start analyses; admins also manage accounts."),
        password_stdin: bool = typer.Option(False, "--password-stdin",
                                            help="Read the password from the first line of stdin instead of a prompt.")
        ) -> None:
    """Create a web account; its password is stored as an Argon2 hash only."""
    from txmdb.accounts import add_user, check_user_name

    check_user_name(name)  # before asking for a password
    cat = catalog(ctx)
    user_id = add_user(cat, name, role.value, _password(password_stdin))
    echo(f"account {name} added as {role.value} (id {user_id})")


@app.command("token")
def token(ctx: typer.Context, name: str = typer.Argument(..., help="Account name."),
          expires_days: Optional[int] = whole_option(None, "--expires-days", low=1, high=MAX_TOKEN_DAYS, metavar="N",
                                                     help="The token stops working after N days (default: when the "
                                                          "account is disabled).")) -> None:
    """Print a new API token of an account, alone on the last line (it is shown once: only its hash is kept)."""
    from txmdb.accounts import issue_token

    value = issue_token(catalog(ctx), name, expires_days)
    when = f"expires in {expires_days} days" if expires_days else "valid until the account is disabled"
    echo(f"API token of account {name} ({when}); send it as 'Authorization: Bearer TOKEN':")
    typer.echo(value)


@app.command("list")
def list_(ctx: typer.Context, fmt: Optional[OutputFormat] = FormatOption, output: Optional[Path] = OutputOption) -> None:
    """Accounts: name, role, disabled, when and by whom created, live API tokens."""
    from txmdb.accounts import list_users

    emit_table(list_users(catalog(ctx)), fmt, output)


@app.command("disable")
def disable(ctx: typer.Context, name: str = typer.Argument(..., help="Account name.")) -> None:
    """Disable an account: it cannot sign in, its sessions end and its API tokens are deleted at once."""
    from txmdb.accounts import disable_user

    disable_user(catalog(ctx), name)
    echo(f"account {name} disabled")


@app.command("enable")
def enable(ctx: typer.Context, name: str = typer.Argument(..., help="Account name.")) -> None:
    """Let a disabled account sign in again (it has no API tokens: issue new ones)."""
    from txmdb.accounts import enable_user

    enable_user(catalog(ctx), name)
    echo(f"account {name} enabled")


@app.command("role")
def role_cmd(ctx: typer.Context, name: str = typer.Argument(..., help="Account name."),
             role: Role = typer.Argument(..., help="viewer, editor or admin.")) -> None:
    """Give an account another role (its sessions end; its API tokens carry the new role)."""
    from txmdb.accounts import set_role

    set_role(catalog(ctx), name, role.value)
    echo(f"account {name} is now {role.value}")


@app.command("password")
def password_cmd(ctx: typer.Context, name: str = typer.Argument(..., help="Account name."),
                 password_stdin: bool = typer.Option(False, "--password-stdin",
                                                     help="Read the password from the first line of stdin instead "
                                                          "of a prompt.")) -> None:
    """Set a new password (Argon2 only; the account's sessions end)."""
    from txmdb.accounts import check_account, set_password

    cat = catalog(ctx)
    check_account(cat, name)            # a missing account is named before a password is asked for
    set_password(cat, name, _password(password_stdin))
    echo(f"password of account {name} set")
