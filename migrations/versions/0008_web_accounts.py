"""web accounts: users, API tokens, sessions, created_by (issue 13)

Revision ID: 0008
Revises: 0007
Create Date: 2026-11-29

Placeholder: the helper working on this issue fills upgrade/downgrade.
"""


revision = '0008'
down_revision = '0007'
branch_labels = None
depends_on = None


def upgrade() -> None:
    pass


def downgrade() -> None:
    pass
