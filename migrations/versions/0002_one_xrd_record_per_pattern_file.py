"""one XRD record per pattern file

Revision ID: 0002
Revises: 0001
Create Date: 2026-11-25
"""
from alembic import op
import sqlalchemy as sa


revision = '0002'
down_revision = '0001'
branch_labels = None
depends_on = None


def upgrade() -> None:

    with op.batch_alter_table('xrd_results', schema=None) as batch_op:
        batch_op.create_unique_constraint(batch_op.f('uq_xrd_results_file_sha256'), ['file_sha256'])




def downgrade() -> None:

    with op.batch_alter_table('xrd_results', schema=None) as batch_op:
        batch_op.drop_constraint(batch_op.f('uq_xrd_results_file_sha256'), type_='unique')


