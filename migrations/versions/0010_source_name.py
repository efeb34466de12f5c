"""source name: the ingested file's own name beside its path

Revision ID: 0010
Revises: 0009
Create Date: 2026-12-01

``source_name`` on every table of ingested files holds the file's base name as a command
ingested it, or the name a web upload was sent with (its path is then the store's
``uploads/<sha256><suffix>``). NULL for rows ingested before this revision: an upload's
original name was never kept, and the base name of its path would be the hash, not its name.
"""
from alembic import op
import sqlalchemy as sa


revision = '0010'
down_revision = '0009'
branch_labels = None
depends_on = None

TABLES = ('txm_scans', 'cycling_runs', 'xas_measurements', 'xrd_results')


def upgrade() -> None:
    for table in TABLES:
        with op.batch_alter_table(table, schema=None) as batch_op:
            batch_op.add_column(sa.Column('source_name', sa.String(length=255), nullable=True))


def downgrade() -> None:
    for table in TABLES:
        with op.batch_alter_table(table, schema=None) as batch_op:
            batch_op.drop_column('source_name')
