"""harvester and jobs: watched files and durable jobs (issue 12)

Revision ID: 0007
Revises: 0006
Create Date: 2026-11-29

Placeholder: the helper working on this issue fills upgrade/downgrade.
"""


revision = '0007'
down_revision = '0006'
branch_labels = None
depends_on = None


def upgrade() -> None:
    pass


def downgrade() -> None:
    pass
