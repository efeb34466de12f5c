"""energy-stack registrations: one translation per energy, and the registration an analysis used

Revision ID: 0004
Revises: 0003
Create Date: 2026-12-01
"""
from alembic import op
import sqlalchemy as sa


revision = '0004'
down_revision = '0003'
branch_labels = None
depends_on = None


def upgrade() -> None:

    op.create_table('registrations',
    sa.Column('id', sa.Integer(), nullable=False),
    sa.Column('scan_id', sa.Integer(), nullable=False),
    sa.Column('method', sa.String(length=80), nullable=False),
    sa.Column('parameters', sa.JSON(), nullable=False),
    sa.Column('reference_index', sa.Integer(), nullable=False),
    sa.Column('reference_energy_ev', sa.Float(), nullable=False),
    sa.Column('max_shift_vox', sa.Float(), nullable=False),
    sa.Column('accepted_poor', sa.Boolean(), nullable=False),
    sa.Column('txmdb_version', sa.String(length=40), nullable=False),
    sa.Column('input_sha256', sa.String(length=64), nullable=False),
    sa.Column('created_at', sa.DateTime(timezone=True), nullable=False),
    sa.Column('elapsed_s', sa.Float(), nullable=True),
    sa.ForeignKeyConstraint(['scan_id'], ['txm_scans.id'], name=op.f('fk_registrations_scan_id_txm_scans')),
    sa.PrimaryKeyConstraint('id', name=op.f('pk_registrations'))
    )
    with op.batch_alter_table('registrations', schema=None) as batch_op:
        batch_op.create_index(batch_op.f('ix_registrations_scan_id'), ['scan_id'], unique=False)

    op.create_table('registration_shifts',
    sa.Column('id', sa.Integer(), nullable=False),
    sa.Column('registration_id', sa.Integer(), nullable=False),
    sa.Column('energy_index', sa.Integer(), nullable=False),
    sa.Column('energy_ev', sa.Float(), nullable=False),
    sa.Column('shift_z', sa.Float(), nullable=True),
    sa.Column('shift_y', sa.Float(), nullable=False),
    sa.Column('shift_x', sa.Float(), nullable=False),
    sa.Column('quality', sa.Float(), nullable=True),
    sa.ForeignKeyConstraint(['registration_id'], ['registrations.id'], name=op.f('fk_registration_shifts_registration_id_registrations'), ondelete='CASCADE'),
    sa.PrimaryKeyConstraint('id', name=op.f('pk_registration_shifts')),
    sa.UniqueConstraint('registration_id', 'energy_index', name='uq_registration_shifts_registration_energy')
    )
    with op.batch_alter_table('registration_shifts', schema=None) as batch_op:
        batch_op.create_index(batch_op.f('ix_registration_shifts_registration_id'), ['registration_id'], unique=False)

    with op.batch_alter_table('analyses', schema=None) as batch_op:
        batch_op.add_column(sa.Column('registration_id', sa.Integer(), nullable=True))
        batch_op.create_index(batch_op.f('ix_analyses_registration_id'), ['registration_id'], unique=False)
        batch_op.create_foreign_key(batch_op.f('fk_analyses_registration_id_registrations'), 'registrations', ['registration_id'], ['id'])


def downgrade() -> None:

    with op.batch_alter_table('analyses', schema=None) as batch_op:
        batch_op.drop_constraint(batch_op.f('fk_analyses_registration_id_registrations'), type_='foreignkey')
        batch_op.drop_index(batch_op.f('ix_analyses_registration_id'))
        batch_op.drop_column('registration_id')

    with op.batch_alter_table('registration_shifts', schema=None) as batch_op:
        batch_op.drop_index(batch_op.f('ix_registration_shifts_registration_id'))

    op.drop_table('registration_shifts')
    with op.batch_alter_table('registrations', schema=None) as batch_op:
        batch_op.drop_index(batch_op.f('ix_registrations_scan_id'))

    op.drop_table('registrations')
