"""the catalogue's own id, which its results store carries in its owner mark

Revision ID: 0005
Revises: 0004
Create Date: 2026-12-02
"""
import datetime as dt
import uuid

from alembic import op
import sqlalchemy as sa


revision = '0005'
down_revision = '0004'
branch_labels = None
depends_on = None


def upgrade() -> None:

    table = op.create_table('catalogue_identity',
    sa.Column('id', sa.Integer(), nullable=False),
    sa.Column('uuid', sa.String(length=36), nullable=False),
    sa.Column('created_at', sa.DateTime(timezone=True), nullable=False),
    sa.CheckConstraint('id = 1', name=op.f('ck_catalogue_identity_one_row')),
    sa.PrimaryKeyConstraint('id', name=op.f('pk_catalogue_identity'))
    )
    # Every catalogue gets its id here, a new one and one upgraded alike; its store is marked
    # with it at the first write (txmdb.store).
    op.bulk_insert(table, [{'id': 1, 'uuid': str(uuid.uuid4()),
                            'created_at': dt.datetime.now(dt.timezone.utc)}])


def downgrade() -> None:

    op.drop_table('catalogue_identity')
