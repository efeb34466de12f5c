"""Alembic environment. Runs on the connection txmdb passes in (see txmdb.db.migrate)."""

from alembic import context

from txmdb.db.models import Base

config = context.config
connection = config.attributes.get("connection")
if connection is None:  # pragma: no cover - txmdb always passes a connection
    raise RuntimeError("txmdb migrations run through txmdb.db.migrate, which passes a connection")

context.configure(
    connection=connection,
    target_metadata=Base.metadata,
    # SQLite cannot ALTER most things in place; batch mode copies the table.
    render_as_batch=connection.dialect.name == "sqlite",
    compare_type=True,
)
with context.begin_transaction():
    context.run_migrations()
