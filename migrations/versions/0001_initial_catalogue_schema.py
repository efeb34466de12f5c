"""initial catalogue schema

Revision ID: 0001
Revises: 
Create Date: 2026-11-25
"""
from alembic import op
import sqlalchemy as sa


revision = '0001'
down_revision = None
branch_labels = None
depends_on = None


def upgrade() -> None:

    op.create_table('samples',
    sa.Column('id', sa.Integer(), nullable=False),
    sa.Column('name', sa.String(length=200), nullable=False),
    sa.Column('material', sa.String(length=200), nullable=True),
    sa.Column('morphology', sa.String(length=100), nullable=True),
    sa.Column('orientation', sa.String(length=100), nullable=True),
    sa.Column('ni_fraction', sa.Float(), nullable=True),
    sa.Column('mn_fraction', sa.Float(), nullable=True),
    sa.Column('co_fraction', sa.Float(), nullable=True),
    sa.Column('source', sa.Text(), nullable=True),
    sa.Column('notes', sa.Text(), nullable=True),
    sa.Column('meta', sa.JSON(), nullable=False),
    sa.Column('created_at', sa.DateTime(timezone=True), nullable=False),
    sa.PrimaryKeyConstraint('id', name=op.f('pk_samples')),
    sa.UniqueConstraint('name', name=op.f('uq_samples_name'))
    )
    with op.batch_alter_table('samples', schema=None) as batch_op:
        batch_op.create_index(batch_op.f('ix_samples_morphology'), ['morphology'], unique=False)

    op.create_table('cells',
    sa.Column('id', sa.Integer(), nullable=False),
    sa.Column('name', sa.String(length=200), nullable=False),
    sa.Column('sample_id', sa.Integer(), nullable=False),
    sa.Column('active_mass_mg', sa.Float(), nullable=True),
    sa.Column('loading_mg_cm2', sa.Float(), nullable=True),
    sa.Column('area_cm2', sa.Float(), nullable=True),
    sa.Column('active_fraction', sa.Float(), nullable=True),
    sa.Column('electrolyte', sa.String(length=200), nullable=True),
    sa.Column('cell_format', sa.String(length=100), nullable=True),
    sa.Column('ce_convention', sa.String(length=40), nullable=False),
    sa.Column('upper_cutoff_v', sa.Float(), nullable=True),
    sa.Column('lower_cutoff_v', sa.Float(), nullable=True),
    sa.Column('notes', sa.Text(), nullable=True),
    sa.Column('created_at', sa.DateTime(timezone=True), nullable=False),
    sa.ForeignKeyConstraint(['sample_id'], ['samples.id'], name=op.f('fk_cells_sample_id_samples')),
    sa.PrimaryKeyConstraint('id', name=op.f('pk_cells')),
    sa.UniqueConstraint('name', name=op.f('uq_cells_name'))
    )
    with op.batch_alter_table('cells', schema=None) as batch_op:
        batch_op.create_index(batch_op.f('ix_cells_sample_id'), ['sample_id'], unique=False)

    op.create_table('txm_scans',
    sa.Column('id', sa.Integer(), nullable=False),
    sa.Column('sample_id', sa.Integer(), nullable=False),
    sa.Column('state', sa.String(length=100), nullable=True),
    sa.Column('layout', sa.String(length=40), nullable=False),
    sa.Column('data_path', sa.Text(), nullable=False),
    sa.Column('energy_path', sa.Text(), nullable=False),
    sa.Column('white_path', sa.Text(), nullable=True),
    sa.Column('dark_path', sa.Text(), nullable=True),
    sa.Column('ndim', sa.Integer(), nullable=False),
    sa.Column('shape', sa.JSON(), nullable=False),
    sa.Column('dtype', sa.String(length=20), nullable=False),
    sa.Column('n_energies', sa.Integer(), nullable=False),
    sa.Column('energy_min_ev', sa.Float(), nullable=False),
    sa.Column('energy_max_ev', sa.Float(), nullable=False),
    sa.Column('energies_ev', sa.JSON(), nullable=False),
    sa.Column('voxel_size_nm', sa.Float(), nullable=True),
    sa.Column('file_path', sa.Text(), nullable=False),
    sa.Column('file_size_bytes', sa.BigInteger(), nullable=False),
    sa.Column('file_sha256', sa.String(length=64), nullable=False),
    sa.Column('ingested_at', sa.DateTime(timezone=True), nullable=False),
    sa.ForeignKeyConstraint(['sample_id'], ['samples.id'], name=op.f('fk_txm_scans_sample_id_samples')),
    sa.PrimaryKeyConstraint('id', name=op.f('pk_txm_scans')),
    sa.UniqueConstraint('file_sha256', name=op.f('uq_txm_scans_file_sha256'))
    )
    with op.batch_alter_table('txm_scans', schema=None) as batch_op:
        batch_op.create_index(batch_op.f('ix_txm_scans_sample_id'), ['sample_id'], unique=False)
        batch_op.create_index(batch_op.f('ix_txm_scans_state'), ['state'], unique=False)

    op.create_table('xas_measurements',
    sa.Column('id', sa.Integer(), nullable=False),
    sa.Column('sample_id', sa.Integer(), nullable=False),
    sa.Column('edge', sa.String(length=20), nullable=False),
    sa.Column('mode', sa.String(length=20), nullable=False),
    sa.Column('state', sa.String(length=100), nullable=True),
    sa.Column('depth_um', sa.Float(), nullable=True),
    sa.Column('edge_energy_ev', sa.Float(), nullable=True),
    sa.Column('e0_derivative_ev', sa.Float(), nullable=True),
    sa.Column('edge_jump', sa.Float(), nullable=True),
    sa.Column('l3_ratio', sa.Float(), nullable=True),
    sa.Column('n_points', sa.Integer(), nullable=False),
    sa.Column('parameters', sa.JSON(), nullable=False),
    sa.Column('spectrum_path', sa.Text(), nullable=False),
    sa.Column('spectrum_sha256', sa.String(length=64), nullable=False),
    sa.Column('file_path', sa.Text(), nullable=False),
    sa.Column('file_size_bytes', sa.BigInteger(), nullable=False),
    sa.Column('file_sha256', sa.String(length=64), nullable=False),
    sa.Column('ingested_at', sa.DateTime(timezone=True), nullable=False),
    sa.ForeignKeyConstraint(['sample_id'], ['samples.id'], name=op.f('fk_xas_measurements_sample_id_samples')),
    sa.PrimaryKeyConstraint('id', name=op.f('pk_xas_measurements')),
    sa.UniqueConstraint('file_sha256', name=op.f('uq_xas_measurements_file_sha256'))
    )
    with op.batch_alter_table('xas_measurements', schema=None) as batch_op:
        batch_op.create_index(batch_op.f('ix_xas_measurements_sample_id'), ['sample_id'], unique=False)
        batch_op.create_index(batch_op.f('ix_xas_measurements_state'), ['state'], unique=False)

    op.create_table('xrd_results',
    sa.Column('id', sa.Integer(), nullable=False),
    sa.Column('sample_id', sa.Integer(), nullable=False),
    sa.Column('state', sa.String(length=100), nullable=True),
    sa.Column('i003_i104', sa.Float(), nullable=True),
    sa.Column('a_angstrom', sa.Float(), nullable=True),
    sa.Column('c_angstrom', sa.Float(), nullable=True),
    sa.Column('wavelength_angstrom', sa.Float(), nullable=True),
    sa.Column('file_path', sa.Text(), nullable=True),
    sa.Column('file_size_bytes', sa.BigInteger(), nullable=True),
    sa.Column('file_sha256', sa.String(length=64), nullable=True),
    sa.Column('parameters', sa.JSON(), nullable=False),
    sa.Column('created_at', sa.DateTime(timezone=True), nullable=False),
    sa.ForeignKeyConstraint(['sample_id'], ['samples.id'], name=op.f('fk_xrd_results_sample_id_samples')),
    sa.PrimaryKeyConstraint('id', name=op.f('pk_xrd_results'))
    )
    with op.batch_alter_table('xrd_results', schema=None) as batch_op:
        batch_op.create_index(batch_op.f('ix_xrd_results_sample_id'), ['sample_id'], unique=False)
        batch_op.create_index(batch_op.f('ix_xrd_results_state'), ['state'], unique=False)

    op.create_table('analyses',
    sa.Column('id', sa.Integer(), nullable=False),
    sa.Column('scan_id', sa.Integer(), nullable=False),
    sa.Column('status', sa.String(length=20), nullable=False),
    sa.Column('parameters', sa.JSON(), nullable=False),
    sa.Column('txmdb_version', sa.String(length=40), nullable=False),
    sa.Column('input_sha256', sa.String(length=64), nullable=False),
    sa.Column('started_at', sa.DateTime(timezone=True), nullable=False),
    sa.Column('finished_at', sa.DateTime(timezone=True), nullable=True),
    sa.Column('timings_s', sa.JSON(), nullable=False),
    sa.Column('results_path', sa.Text(), nullable=True),
    sa.Column('results_sha256', sa.String(length=64), nullable=True),
    sa.Column('error', sa.Text(), nullable=True),
    sa.Column('gradient_unit', sa.String(length=20), nullable=False),
    sa.Column('n_valid_voxels', sa.BigInteger(), nullable=True),
    sa.Column('n_particles', sa.Integer(), nullable=True),
    sa.Column('mean_edge_ev', sa.Float(), nullable=True),
    sa.Column('std_edge_ev', sa.Float(), nullable=True),
    sa.ForeignKeyConstraint(['scan_id'], ['txm_scans.id'], name=op.f('fk_analyses_scan_id_txm_scans')),
    sa.PrimaryKeyConstraint('id', name=op.f('pk_analyses'))
    )
    with op.batch_alter_table('analyses', schema=None) as batch_op:
        batch_op.create_index(batch_op.f('ix_analyses_scan_id'), ['scan_id'], unique=False)
        batch_op.create_index(batch_op.f('ix_analyses_status'), ['status'], unique=False)

    op.create_table('cycling_runs',
    sa.Column('id', sa.Integer(), nullable=False),
    sa.Column('cell_id', sa.Integer(), nullable=False),
    sa.Column('file_format', sa.String(length=40), nullable=False),
    sa.Column('n_records', sa.Integer(), nullable=False),
    sa.Column('n_cycles', sa.Integer(), nullable=False),
    sa.Column('upper_cutoff_v', sa.Float(), nullable=True),
    sa.Column('reference_cycle', sa.Integer(), nullable=False),
    sa.Column('records_path', sa.Text(), nullable=False),
    sa.Column('records_sha256', sa.String(length=64), nullable=False),
    sa.Column('column_map', sa.JSON(), nullable=False),
    sa.Column('file_path', sa.Text(), nullable=False),
    sa.Column('file_size_bytes', sa.BigInteger(), nullable=False),
    sa.Column('file_sha256', sa.String(length=64), nullable=False),
    sa.Column('ingested_at', sa.DateTime(timezone=True), nullable=False),
    sa.ForeignKeyConstraint(['cell_id'], ['cells.id'], name=op.f('fk_cycling_runs_cell_id_cells')),
    sa.PrimaryKeyConstraint('id', name=op.f('pk_cycling_runs')),
    sa.UniqueConstraint('file_sha256', name=op.f('uq_cycling_runs_file_sha256'))
    )
    with op.batch_alter_table('cycling_runs', schema=None) as batch_op:
        batch_op.create_index(batch_op.f('ix_cycling_runs_cell_id'), ['cell_id'], unique=False)

    op.create_table('cycles',
    sa.Column('id', sa.Integer(), nullable=False),
    sa.Column('run_id', sa.Integer(), nullable=False),
    sa.Column('cycle', sa.Integer(), nullable=False),
    sa.Column('charge_capacity_mah', sa.Float(), nullable=True),
    sa.Column('discharge_capacity_mah', sa.Float(), nullable=True),
    sa.Column('charge_capacity_mah_g', sa.Float(), nullable=True),
    sa.Column('discharge_capacity_mah_g', sa.Float(), nullable=True),
    sa.Column('coulombic_efficiency_pct', sa.Float(), nullable=True),
    sa.Column('charge_energy_mwh', sa.Float(), nullable=True),
    sa.Column('discharge_energy_mwh', sa.Float(), nullable=True),
    sa.Column('mean_charge_voltage_v', sa.Float(), nullable=True),
    sa.Column('mean_discharge_voltage_v', sa.Float(), nullable=True),
    sa.Column('delta_v', sa.Float(), nullable=True),
    sa.Column('onset_discharge_voltage_v', sa.Float(), nullable=True),
    sa.Column('voltage_drop_v', sa.Float(), nullable=True),
    sa.Column('end_charge_voltage_v', sa.Float(), nullable=True),
    sa.Column('end_discharge_voltage_v', sa.Float(), nullable=True),
    sa.Column('duration_s', sa.Float(), nullable=True),
    sa.ForeignKeyConstraint(['run_id'], ['cycling_runs.id'], name=op.f('fk_cycles_run_id_cycling_runs'), ondelete='CASCADE'),
    sa.PrimaryKeyConstraint('id', name=op.f('pk_cycles')),
    sa.UniqueConstraint('run_id', 'cycle', name='uq_cycles_run_cycle')
    )
    with op.batch_alter_table('cycles', schema=None) as batch_op:
        batch_op.create_index(batch_op.f('ix_cycles_run_id'), ['run_id'], unique=False)

    op.create_table('depth_profiles',
    sa.Column('id', sa.Integer(), nullable=False),
    sa.Column('analysis_id', sa.Integer(), nullable=False),
    sa.Column('particle', sa.Integer(), nullable=True),
    sa.Column('depth_lo_vox', sa.Float(), nullable=False),
    sa.Column('depth_hi_vox', sa.Float(), nullable=False),
    sa.Column('depth_lo_nm', sa.Float(), nullable=True),
    sa.Column('depth_hi_nm', sa.Float(), nullable=True),
    sa.Column('n_voxels', sa.Integer(), nullable=False),
    sa.Column('mean_edge_ev', sa.Float(), nullable=False),
    sa.Column('std_edge_ev', sa.Float(), nullable=False),
    sa.ForeignKeyConstraint(['analysis_id'], ['analyses.id'], name=op.f('fk_depth_profiles_analysis_id_analyses'), ondelete='CASCADE'),
    sa.PrimaryKeyConstraint('id', name=op.f('pk_depth_profiles'))
    )
    with op.batch_alter_table('depth_profiles', schema=None) as batch_op:
        batch_op.create_index(batch_op.f('ix_depth_profiles_analysis_id'), ['analysis_id'], unique=False)

    op.create_table('edge_histograms',
    sa.Column('id', sa.Integer(), nullable=False),
    sa.Column('analysis_id', sa.Integer(), nullable=False),
    sa.Column('particle', sa.Integer(), nullable=True),
    sa.Column('edge_lo_ev', sa.Float(), nullable=False),
    sa.Column('edge_hi_ev', sa.Float(), nullable=False),
    sa.Column('count', sa.Integer(), nullable=False),
    sa.Column('probability', sa.Float(), nullable=False),
    sa.ForeignKeyConstraint(['analysis_id'], ['analyses.id'], name=op.f('fk_edge_histograms_analysis_id_analyses'), ondelete='CASCADE'),
    sa.PrimaryKeyConstraint('id', name=op.f('pk_edge_histograms'))
    )
    with op.batch_alter_table('edge_histograms', schema=None) as batch_op:
        batch_op.create_index(batch_op.f('ix_edge_histograms_analysis_id'), ['analysis_id'], unique=False)

    op.create_table('gradient_summaries',
    sa.Column('id', sa.Integer(), nullable=False),
    sa.Column('analysis_id', sa.Integer(), nullable=False),
    sa.Column('particle', sa.Integer(), nullable=True),
    sa.Column('bin_factor', sa.Integer(), nullable=False),
    sa.Column('voxel_size_nm', sa.Float(), nullable=True),
    sa.Column('n_vectors', sa.Integer(), nullable=False),
    sa.Column('mean_u_ev_per_nm', sa.Float(), nullable=True),
    sa.Column('tangential_excess', sa.Float(), nullable=True),
    sa.Column('tangential_excess_weighted', sa.Float(), nullable=True),
    sa.Column('kl_divergence', sa.Float(), nullable=True),
    sa.Column('kl_divergence_weighted', sa.Float(), nullable=True),
    sa.ForeignKeyConstraint(['analysis_id'], ['analyses.id'], name=op.f('fk_gradient_summaries_analysis_id_analyses'), ondelete='CASCADE'),
    sa.PrimaryKeyConstraint('id', name=op.f('pk_gradient_summaries'))
    )
    with op.batch_alter_table('gradient_summaries', schema=None) as batch_op:
        batch_op.create_index('ix_gradient_summaries_analysis_bin', ['analysis_id', 'bin_factor'], unique=False)
        batch_op.create_index(batch_op.f('ix_gradient_summaries_analysis_id'), ['analysis_id'], unique=False)

    op.create_table('particles',
    sa.Column('id', sa.Integer(), nullable=False),
    sa.Column('analysis_id', sa.Integer(), nullable=False),
    sa.Column('particle', sa.Integer(), nullable=False),
    sa.Column('n_voxels', sa.Integer(), nullable=False),
    sa.Column('centroid_z', sa.Float(), nullable=True),
    sa.Column('centroid_y', sa.Float(), nullable=False),
    sa.Column('centroid_x', sa.Float(), nullable=False),
    sa.Column('equivalent_radius_vox', sa.Float(), nullable=False),
    sa.Column('equivalent_radius_nm', sa.Float(), nullable=True),
    sa.Column('mean_edge_ev', sa.Float(), nullable=False),
    sa.Column('std_edge_ev', sa.Float(), nullable=False),
    sa.ForeignKeyConstraint(['analysis_id'], ['analyses.id'], name=op.f('fk_particles_analysis_id_analyses'), ondelete='CASCADE'),
    sa.PrimaryKeyConstraint('id', name=op.f('pk_particles')),
    sa.UniqueConstraint('analysis_id', 'particle', name='uq_particles_analysis_particle')
    )
    with op.batch_alter_table('particles', schema=None) as batch_op:
        batch_op.create_index(batch_op.f('ix_particles_analysis_id'), ['analysis_id'], unique=False)

    op.create_table('theta_histograms',
    sa.Column('id', sa.Integer(), nullable=False),
    sa.Column('analysis_id', sa.Integer(), nullable=False),
    sa.Column('particle', sa.Integer(), nullable=True),
    sa.Column('bin_factor', sa.Integer(), nullable=False),
    sa.Column('weighted', sa.Boolean(), nullable=False),
    sa.Column('theta_lo', sa.Float(), nullable=False),
    sa.Column('theta_hi', sa.Float(), nullable=False),
    sa.Column('probability', sa.Float(), nullable=False),
    sa.Column('reference', sa.Float(), nullable=False),
    sa.ForeignKeyConstraint(['analysis_id'], ['analyses.id'], name=op.f('fk_theta_histograms_analysis_id_analyses'), ondelete='CASCADE'),
    sa.PrimaryKeyConstraint('id', name=op.f('pk_theta_histograms'))
    )
    with op.batch_alter_table('theta_histograms', schema=None) as batch_op:
        batch_op.create_index('ix_theta_histograms_analysis_bin', ['analysis_id', 'bin_factor', 'weighted'], unique=False)
        batch_op.create_index(batch_op.f('ix_theta_histograms_analysis_id'), ['analysis_id'], unique=False)

    op.create_table('u_theta_profiles',
    sa.Column('id', sa.Integer(), nullable=False),
    sa.Column('analysis_id', sa.Integer(), nullable=False),
    sa.Column('particle', sa.Integer(), nullable=True),
    sa.Column('bin_factor', sa.Integer(), nullable=False),
    sa.Column('theta_lo', sa.Float(), nullable=False),
    sa.Column('theta_hi', sa.Float(), nullable=False),
    sa.Column('n', sa.Integer(), nullable=False),
    sa.Column('mean_u_ev_per_nm', sa.Float(), nullable=True),
    sa.ForeignKeyConstraint(['analysis_id'], ['analyses.id'], name=op.f('fk_u_theta_profiles_analysis_id_analyses'), ondelete='CASCADE'),
    sa.PrimaryKeyConstraint('id', name=op.f('pk_u_theta_profiles'))
    )
    with op.batch_alter_table('u_theta_profiles', schema=None) as batch_op:
        batch_op.create_index(batch_op.f('ix_u_theta_profiles_analysis_id'), ['analysis_id'], unique=False)

    op.create_table('vector_size_histograms',
    sa.Column('id', sa.Integer(), nullable=False),
    sa.Column('analysis_id', sa.Integer(), nullable=False),
    sa.Column('particle', sa.Integer(), nullable=True),
    sa.Column('bin_factor', sa.Integer(), nullable=False),
    sa.Column('phi_lo', sa.Float(), nullable=False),
    sa.Column('phi_hi', sa.Float(), nullable=False),
    sa.Column('u_lo_ev_per_nm', sa.Float(), nullable=False),
    sa.Column('u_hi_ev_per_nm', sa.Float(), nullable=False),
    sa.Column('count', sa.Integer(), nullable=False),
    sa.ForeignKeyConstraint(['analysis_id'], ['analyses.id'], name=op.f('fk_vector_size_histograms_analysis_id_analyses'), ondelete='CASCADE'),
    sa.PrimaryKeyConstraint('id', name=op.f('pk_vector_size_histograms'))
    )
    with op.batch_alter_table('vector_size_histograms', schema=None) as batch_op:
        batch_op.create_index(batch_op.f('ix_vector_size_histograms_analysis_id'), ['analysis_id'], unique=False)

    op.create_table('vector_size_stats',
    sa.Column('id', sa.Integer(), nullable=False),
    sa.Column('analysis_id', sa.Integer(), nullable=False),
    sa.Column('particle', sa.Integer(), nullable=True),
    sa.Column('bin_factor', sa.Integer(), nullable=False),
    sa.Column('phi_lo', sa.Float(), nullable=False),
    sa.Column('phi_hi', sa.Float(), nullable=False),
    sa.Column('n', sa.Integer(), nullable=False),
    sa.Column('mean_u_ev_per_nm', sa.Float(), nullable=True),
    sa.Column('median_u_ev_per_nm', sa.Float(), nullable=True),
    sa.Column('p90_u_ev_per_nm', sa.Float(), nullable=True),
    sa.ForeignKeyConstraint(['analysis_id'], ['analyses.id'], name=op.f('fk_vector_size_stats_analysis_id_analyses'), ondelete='CASCADE'),
    sa.PrimaryKeyConstraint('id', name=op.f('pk_vector_size_stats'))
    )
    with op.batch_alter_table('vector_size_stats', schema=None) as batch_op:
        batch_op.create_index(batch_op.f('ix_vector_size_stats_analysis_id'), ['analysis_id'], unique=False)




def downgrade() -> None:

    with op.batch_alter_table('vector_size_stats', schema=None) as batch_op:
        batch_op.drop_index(batch_op.f('ix_vector_size_stats_analysis_id'))

    op.drop_table('vector_size_stats')
    with op.batch_alter_table('vector_size_histograms', schema=None) as batch_op:
        batch_op.drop_index(batch_op.f('ix_vector_size_histograms_analysis_id'))

    op.drop_table('vector_size_histograms')
    with op.batch_alter_table('u_theta_profiles', schema=None) as batch_op:
        batch_op.drop_index(batch_op.f('ix_u_theta_profiles_analysis_id'))

    op.drop_table('u_theta_profiles')
    with op.batch_alter_table('theta_histograms', schema=None) as batch_op:
        batch_op.drop_index(batch_op.f('ix_theta_histograms_analysis_id'))
        batch_op.drop_index('ix_theta_histograms_analysis_bin')

    op.drop_table('theta_histograms')
    with op.batch_alter_table('particles', schema=None) as batch_op:
        batch_op.drop_index(batch_op.f('ix_particles_analysis_id'))

    op.drop_table('particles')
    with op.batch_alter_table('gradient_summaries', schema=None) as batch_op:
        batch_op.drop_index(batch_op.f('ix_gradient_summaries_analysis_id'))
        batch_op.drop_index('ix_gradient_summaries_analysis_bin')

    op.drop_table('gradient_summaries')
    with op.batch_alter_table('edge_histograms', schema=None) as batch_op:
        batch_op.drop_index(batch_op.f('ix_edge_histograms_analysis_id'))

    op.drop_table('edge_histograms')
    with op.batch_alter_table('depth_profiles', schema=None) as batch_op:
        batch_op.drop_index(batch_op.f('ix_depth_profiles_analysis_id'))

    op.drop_table('depth_profiles')
    with op.batch_alter_table('cycles', schema=None) as batch_op:
        batch_op.drop_index(batch_op.f('ix_cycles_run_id'))

    op.drop_table('cycles')
    with op.batch_alter_table('cycling_runs', schema=None) as batch_op:
        batch_op.drop_index(batch_op.f('ix_cycling_runs_cell_id'))

    op.drop_table('cycling_runs')
    with op.batch_alter_table('analyses', schema=None) as batch_op:
        batch_op.drop_index(batch_op.f('ix_analyses_status'))
        batch_op.drop_index(batch_op.f('ix_analyses_scan_id'))

    op.drop_table('analyses')
    with op.batch_alter_table('xrd_results', schema=None) as batch_op:
        batch_op.drop_index(batch_op.f('ix_xrd_results_state'))
        batch_op.drop_index(batch_op.f('ix_xrd_results_sample_id'))

    op.drop_table('xrd_results')
    with op.batch_alter_table('xas_measurements', schema=None) as batch_op:
        batch_op.drop_index(batch_op.f('ix_xas_measurements_state'))
        batch_op.drop_index(batch_op.f('ix_xas_measurements_sample_id'))

    op.drop_table('xas_measurements')
    with op.batch_alter_table('txm_scans', schema=None) as batch_op:
        batch_op.drop_index(batch_op.f('ix_txm_scans_state'))
        batch_op.drop_index(batch_op.f('ix_txm_scans_sample_id'))

    op.drop_table('txm_scans')
    with op.batch_alter_table('cells', schema=None) as batch_op:
        batch_op.drop_index(batch_op.f('ix_cells_sample_id'))

    op.drop_table('cells')
    with op.batch_alter_table('samples', schema=None) as batch_op:
        batch_op.drop_index(batch_op.f('ix_samples_morphology'))

    op.drop_table('samples')

