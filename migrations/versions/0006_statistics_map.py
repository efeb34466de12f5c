"""spectral maps: statistics rows carry their map and gradient unit (issue 11)

Revision ID: 0006
Revises: 0005
Create Date: 2026-11-29

Placeholder: the helper working on this issue fills upgrade/downgrade.
"""
from alembic import op
import sqlalchemy as sa


revision = '0006'
down_revision = '0005'
branch_labels = None
depends_on = None

# Statistics tables: every row gets the map it is of ('edge' for the rows already there).
_STATISTICS = ('particles', 'edge_histograms', 'depth_profiles', 'theta_histograms', 'gradient_summaries',
               'vector_size_stats', 'vector_size_histograms', 'u_theta_profiles')
# Tables of |u| values: the unit leaves the column names, a gradient_unit column says it.
_RENAMED = {
    'gradient_summaries': {'mean_u_ev_per_nm': 'mean_u'},
    'vector_size_stats': {'mean_u_ev_per_nm': 'mean_u', 'median_u_ev_per_nm': 'median_u',
                          'p90_u_ev_per_nm': 'p90_u'},
    'vector_size_histograms': {'u_lo_ev_per_nm': 'u_lo', 'u_hi_ev_per_nm': 'u_hi'},
    'u_theta_profiles': {'mean_u_ev_per_nm': 'mean_u'},
}


def _upgrade_statistics_maps() -> None:
    for table in _STATISTICS:
        with op.batch_alter_table(table, schema=None) as batch_op:
            batch_op.add_column(sa.Column('map', sa.String(length=200), server_default='edge', nullable=False))
            if table in _RENAMED:
                batch_op.add_column(sa.Column('gradient_unit', sa.String(length=20), nullable=True))
                for old, new in _RENAMED[table].items():
                    batch_op.alter_column(old, new_column_name=new)
    for table in _RENAMED:
        # rows so far are of the edge map: their unit is their analysis' (eV/nm or eV/voxel)
        op.execute(f"UPDATE {table} SET gradient_unit = (SELECT analyses.gradient_unit FROM analyses "
                   f"WHERE analyses.id = {table}.analysis_id)")
        with op.batch_alter_table(table, schema=None) as batch_op:
            batch_op.alter_column('gradient_unit', existing_type=sa.String(length=20), nullable=False)

    op.create_table('map_summaries',
    sa.Column('id', sa.Integer(), nullable=False),
    sa.Column('analysis_id', sa.Integer(), nullable=False),
    sa.Column('particle', sa.Integer(), nullable=True),
    sa.Column('map', sa.String(length=200), server_default='edge', nullable=False),
    sa.Column('n_valid', sa.BigInteger(), nullable=False),
    sa.Column('mean', sa.Float(), nullable=True),
    sa.Column('std', sa.Float(), nullable=True),
    sa.Column('p05', sa.Float(), nullable=True),
    sa.Column('p50', sa.Float(), nullable=True),
    sa.Column('p95', sa.Float(), nullable=True),
    sa.ForeignKeyConstraint(['analysis_id'], ['analyses.id'], name=op.f('fk_map_summaries_analysis_id_analyses'),
                            ondelete='CASCADE'),
    sa.PrimaryKeyConstraint('id', name=op.f('pk_map_summaries'))
    )
    with op.batch_alter_table('map_summaries', schema=None) as batch_op:
        batch_op.create_index(batch_op.f('ix_map_summaries_analysis_id'), ['analysis_id'], unique=False)


def _downgrade_statistics_maps() -> None:
    with op.batch_alter_table('map_summaries', schema=None) as batch_op:
        batch_op.drop_index(batch_op.f('ix_map_summaries_analysis_id'))
    op.drop_table('map_summaries')
    for table in _STATISTICS:
        # statistics of other maps than the edge have no place in the older schema
        op.execute(f"DELETE FROM {table} WHERE map <> 'edge'")
        with op.batch_alter_table(table, schema=None) as batch_op:
            for old, new in _RENAMED.get(table, {}).items():
                batch_op.alter_column(new, new_column_name=old)
            if table in _RENAMED:
                batch_op.drop_column('gradient_unit')
            batch_op.drop_column('map')


def _upgrade_clusters() -> None:
    # phase clusters (txmdb.analysis.clusters): mean spectrum per cluster and energy, PCA of the sample
    op.create_table('cluster_spectra',
    sa.Column('id', sa.Integer(), nullable=False),
    sa.Column('analysis_id', sa.Integer(), nullable=False),
    sa.Column('cluster', sa.Integer(), nullable=False),
    sa.Column('energy_index', sa.Integer(), nullable=False),
    sa.Column('energy_ev', sa.Float(), nullable=False),
    sa.Column('mean_norm', sa.Float(), nullable=True),
    sa.Column('n_voxels', sa.BigInteger(), nullable=False),
    sa.ForeignKeyConstraint(['analysis_id'], ['analyses.id'], name=op.f('fk_cluster_spectra_analysis_id_analyses'),
                            ondelete='CASCADE'),
    sa.PrimaryKeyConstraint('id', name=op.f('pk_cluster_spectra')),
    sa.UniqueConstraint('analysis_id', 'cluster', 'energy_index', name='uq_cluster_spectra_analysis_cluster_energy')
    )
    with op.batch_alter_table('cluster_spectra', schema=None) as batch_op:
        batch_op.create_index(batch_op.f('ix_cluster_spectra_analysis_id'), ['analysis_id'], unique=False)
    op.create_table('pca_variance',
    sa.Column('id', sa.Integer(), nullable=False),
    sa.Column('analysis_id', sa.Integer(), nullable=False),
    sa.Column('component', sa.Integer(), nullable=False),
    sa.Column('explained_variance_ratio', sa.Float(), nullable=False),
    sa.ForeignKeyConstraint(['analysis_id'], ['analyses.id'], name=op.f('fk_pca_variance_analysis_id_analyses'),
                            ondelete='CASCADE'),
    sa.PrimaryKeyConstraint('id', name=op.f('pk_pca_variance')),
    sa.UniqueConstraint('analysis_id', 'component', name='uq_pca_variance_analysis_component')
    )
    with op.batch_alter_table('pca_variance', schema=None) as batch_op:
        batch_op.create_index(batch_op.f('ix_pca_variance_analysis_id'), ['analysis_id'], unique=False)


def _downgrade_clusters() -> None:
    for table in ('pca_variance', 'cluster_spectra'):
        with op.batch_alter_table(table, schema=None) as batch_op:
            batch_op.drop_index(batch_op.f(f'ix_{table}_analysis_id'))
        op.drop_table(table)


def _upgrade_references() -> None:
    # named reference spectra for LCF (xas ingest --reference NAME): no sample
    with op.batch_alter_table('xas_measurements', schema=None) as batch_op:
        batch_op.add_column(sa.Column('reference_name', sa.String(length=100), nullable=True))
        batch_op.alter_column('sample_id', existing_type=sa.Integer(), nullable=True)
        batch_op.create_unique_constraint(batch_op.f('uq_xas_measurements_reference_name'), ['reference_name'])
        batch_op.create_check_constraint(batch_op.f('ck_xas_measurements_sample_or_reference'),
                                         '(sample_id IS NULL) <> (reference_name IS NULL)')


def _downgrade_references() -> None:
    # references have no place in the older schema (their store files become orphans for db check)
    op.execute("DELETE FROM xas_measurements WHERE sample_id IS NULL")
    with op.batch_alter_table('xas_measurements', schema=None) as batch_op:
        batch_op.drop_constraint(batch_op.f('ck_xas_measurements_sample_or_reference'), type_='check')
        batch_op.drop_constraint(batch_op.f('uq_xas_measurements_reference_name'), type_='unique')
        batch_op.alter_column('sample_id', existing_type=sa.Integer(), nullable=False)
        batch_op.drop_column('reference_name')


def upgrade() -> None:
    _upgrade_statistics_maps()
    _upgrade_clusters()
    _upgrade_references()


def downgrade() -> None:
    _downgrade_references()
    _downgrade_clusters()
    _downgrade_statistics_maps()
