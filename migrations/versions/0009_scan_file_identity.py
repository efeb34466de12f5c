"""scan file identity: trust a tomogram's SHA-256 while its stat identity is unchanged

Revision ID: 0009
Revises: 0008
Create Date: 2026-11-29

``txm_scans.file_identity`` holds ``dev:ino:size:mtime_ns:ctime_ns`` of the scan's file when
its SHA-256 was last computed and matched (txmdb.io.files.identity_text); NULL until then,
so scans ingested before this revision are hashed in full by their next analysis.
"""
from alembic import op
import sqlalchemy as sa


revision = '0009'
down_revision = '0008'
branch_labels = None
depends_on = None


def upgrade() -> None:
    with op.batch_alter_table('txm_scans', schema=None) as batch_op:
        batch_op.add_column(sa.Column('file_identity', sa.String(length=120), nullable=True))


def downgrade() -> None:
    with op.batch_alter_table('txm_scans', schema=None) as batch_op:
        batch_op.drop_column('file_identity')
