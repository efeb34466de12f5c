"""harvester and jobs: watched files and durable jobs (issue 12)

Revision ID: 0007
Revises: 0006
Create Date: 2026-11-29

Placeholder: the helper working on this issue fills upgrade/downgrade.
"""
from alembic import op
import sqlalchemy as sa


revision = '0007'
down_revision = '0006'
branch_labels = None
depends_on = None


def upgrade() -> None:
    _create_jobs()
    _create_harvested_files()


def downgrade() -> None:
    _drop_harvested_files()
    _drop_jobs()


def _create_jobs() -> None:
    # durable jobs (txmdb.jobs)
    op.create_table('jobs',
    sa.Column('id', sa.Integer(), nullable=False),
    sa.Column('kind', sa.String(length=20), nullable=False),
    sa.Column('parameters', sa.JSON(), nullable=False),
    sa.Column('scan_id', sa.Integer(), nullable=False),
    sa.Column('after_job_id', sa.Integer(), nullable=True),
    sa.Column('status', sa.String(length=20), nullable=False),
    sa.Column('attempts', sa.Integer(), nullable=False),
    sa.Column('max_attempts', sa.Integer(), nullable=False),
    sa.Column('worker', sa.String(length=300), nullable=True),
    sa.Column('lease_expires_at', sa.DateTime(timezone=True), nullable=True),
    sa.Column('created_at', sa.DateTime(timezone=True), nullable=False),
    sa.Column('started_at', sa.DateTime(timezone=True), nullable=True),
    sa.Column('finished_at', sa.DateTime(timezone=True), nullable=True),
    sa.Column('error', sa.Text(), nullable=True),
    sa.Column('result', sa.JSON(), nullable=True),
    sa.Column('created_by', sa.String(length=200), nullable=True),
    sa.ForeignKeyConstraint(['after_job_id'], ['jobs.id'], name=op.f('fk_jobs_after_job_id_jobs')),
    sa.ForeignKeyConstraint(['scan_id'], ['txm_scans.id'], name=op.f('fk_jobs_scan_id_txm_scans')),
    sa.PrimaryKeyConstraint('id', name=op.f('pk_jobs'))
    )
    with op.batch_alter_table('jobs', schema=None) as batch_op:
        batch_op.create_index(batch_op.f('ix_jobs_after_job_id'), ['after_job_id'], unique=False)
        batch_op.create_index(batch_op.f('ix_jobs_scan_id'), ['scan_id'], unique=False)
        batch_op.create_index('ix_jobs_status_id', ['status', 'id'], unique=False)
        batch_op.create_index('ix_jobs_status_lease_expires_at', ['status', 'lease_expires_at'], unique=False)


def _drop_jobs() -> None:
    with op.batch_alter_table('jobs', schema=None) as batch_op:
        batch_op.drop_index('ix_jobs_status_lease_expires_at')
        batch_op.drop_index('ix_jobs_status_id')
        batch_op.drop_index(batch_op.f('ix_jobs_scan_id'))
        batch_op.drop_index(batch_op.f('ix_jobs_after_job_id'))

    op.drop_table('jobs')


def _create_harvested_files() -> None:
    # every file the watcher saw (txmdb.harvest)
    op.create_table('harvested_files',
    sa.Column('id', sa.Integer(), nullable=False),
    sa.Column('path', sa.Text(), nullable=False),
    sa.Column('rule', sa.String(length=200), nullable=False),
    sa.Column('kind', sa.String(length=20), nullable=False),
    sa.Column('status', sa.String(length=20), nullable=False),
    sa.Column('size_bytes', sa.BigInteger(), nullable=True),
    sa.Column('mtime', sa.Float(), nullable=True),
    sa.Column('sha256', sa.String(length=64), nullable=True),
    sa.Column('error', sa.Text(), nullable=True),
    sa.Column('missing_reference', sa.Boolean(), nullable=False),
    sa.Column('changed_after_ingest', sa.Boolean(), nullable=False),
    sa.Column('record_kind', sa.String(length=40), nullable=True),
    sa.Column('record_id', sa.Integer(), nullable=True),
    sa.Column('first_seen', sa.DateTime(timezone=True), nullable=False),
    sa.Column('updated', sa.DateTime(timezone=True), nullable=False),
    sa.PrimaryKeyConstraint('id', name=op.f('pk_harvested_files')),
    sa.UniqueConstraint('path', name=op.f('uq_harvested_files_path'))
    )
    with op.batch_alter_table('harvested_files', schema=None) as batch_op:
        batch_op.create_index(batch_op.f('ix_harvested_files_status'), ['status'], unique=False)


def _drop_harvested_files() -> None:
    with op.batch_alter_table('harvested_files', schema=None) as batch_op:
        batch_op.drop_index(batch_op.f('ix_harvested_files_status'))

    op.drop_table('harvested_files')
