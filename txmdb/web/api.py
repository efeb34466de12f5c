"""The HTTP API under /api/v1 (DESIGN §12), over the same library functions as the CLI."""

from __future__ import annotations

from fastapi import APIRouter, Request
from fastapi.concurrency import run_in_threadpool

router = APIRouter()


@router.get("/health", tags=["service"])
async def health(request: Request) -> dict:
    """``{"status": "ok", "schema": REVISION}``: the server runs and its catalogue answers (no sign-in needed)."""
    from txmdb.db.migrate import current_revision

    return {"status": "ok", "schema": await run_in_threadpool(current_revision, request.app.state.catalog.engine)}
