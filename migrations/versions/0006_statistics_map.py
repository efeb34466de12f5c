"""spectral maps: statistics rows carry their map and gradient unit (issue 11)

Revision ID: 0006
Revises: 0005
Create Date: 2026-11-29

Placeholder: the helper working on this issue fills upgrade/downgrade.
"""


revision = '0006'
down_revision = '0005'
branch_labels = None
depends_on = None


def upgrade() -> None:
    pass


def downgrade() -> None:
    pass
