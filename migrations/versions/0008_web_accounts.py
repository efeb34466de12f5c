"""web accounts: users, API tokens, sessions, created_by (issue 13)

Revision ID: 0008
Revises: 0007
Create Date: 2026-11-29

"""
import datetime as dt
import secrets

from alembic import op
import sqlalchemy as sa


revision = '0008'
down_revision = '0007'
branch_labels = None
depends_on = None


# Tables the SQL console never reads (txmdb.vocabulary.PRIVATE_TABLES, as of this revision).
PRIVATE_TABLES = ('users', 'api_tokens', 'sessions', 'login_attempts', 'web_key')
# Tables a write creates rows in: each records who wrote it (txmdb.db.actor).
WRITTEN_TABLES = ('samples', 'cells', 'cycling_runs', 'xas_measurements', 'xrd_results', 'txm_scans',
                  'analyses', 'registrations')


def upgrade() -> None:
    # --- accounts (issue 13)
    op.create_table('users',
    sa.Column('id', sa.Integer(), nullable=False),
    sa.Column('name', sa.String(length=64), nullable=False),
    sa.Column('role', sa.String(length=20), nullable=False),
    sa.Column('password_hash', sa.Text(), nullable=False),
    sa.Column('disabled', sa.Boolean(), nullable=False),
    sa.Column('created_at', sa.DateTime(timezone=True), nullable=False),
    sa.Column('created_by', sa.String(length=200), nullable=True),
    sa.CheckConstraint("role IN ('viewer', 'editor', 'admin')", name=op.f('ck_users_role')),
    sa.PrimaryKeyConstraint('id', name=op.f('pk_users')),
    sa.UniqueConstraint('name', name=op.f('uq_users_name'))
    )
    op.create_table('api_tokens',
    sa.Column('id', sa.Integer(), nullable=False),
    sa.Column('user_id', sa.Integer(), nullable=False),
    sa.Column('token_hash', sa.String(length=64), nullable=False),
    sa.Column('created_at', sa.DateTime(timezone=True), nullable=False),
    sa.Column('expires_at', sa.DateTime(timezone=True), nullable=True),
    sa.ForeignKeyConstraint(['user_id'], ['users.id'], name=op.f('fk_api_tokens_user_id_users'), ondelete='CASCADE'),
    sa.PrimaryKeyConstraint('id', name=op.f('pk_api_tokens')),
    sa.UniqueConstraint('token_hash', name=op.f('uq_api_tokens_token_hash'))
    )
    op.create_index(op.f('ix_api_tokens_user_id'), 'api_tokens', ['user_id'], unique=False)
    op.create_table('sessions',
    sa.Column('id', sa.Integer(), nullable=False),
    sa.Column('user_id', sa.Integer(), nullable=False),
    sa.Column('session_hash', sa.String(length=64), nullable=False),
    sa.Column('created_at', sa.DateTime(timezone=True), nullable=False),
    sa.Column('expires_at', sa.DateTime(timezone=True), nullable=False),
    sa.ForeignKeyConstraint(['user_id'], ['users.id'], name=op.f('fk_sessions_user_id_users'), ondelete='CASCADE'),
    sa.PrimaryKeyConstraint('id', name=op.f('pk_sessions')),
    sa.UniqueConstraint('session_hash', name=op.f('uq_sessions_session_hash'))
    )
    op.create_index(op.f('ix_sessions_user_id'), 'sessions', ['user_id'], unique=False)
    op.create_index(op.f('ix_sessions_expires_at'), 'sessions', ['expires_at'], unique=False)
    op.create_table('login_attempts',
    sa.Column('id', sa.Integer(), nullable=False),
    sa.Column('username', sa.String(length=200), nullable=False),
    sa.Column('remote', sa.String(length=100), nullable=False),
    sa.Column('attempted_at', sa.DateTime(timezone=True), nullable=False),
    sa.Column('succeeded', sa.Boolean(), nullable=False),
    sa.PrimaryKeyConstraint('id', name=op.f('pk_login_attempts'))
    )
    op.create_index('ix_login_attempts_username_at', 'login_attempts', ['username', 'attempted_at'], unique=False)
    op.create_index('ix_login_attempts_remote_at', 'login_attempts', ['remote', 'attempted_at'], unique=False)
    key = op.create_table('web_key',
    sa.Column('id', sa.Integer(), nullable=False),
    sa.Column('key_hex', sa.String(length=64), nullable=False),
    sa.Column('created_at', sa.DateTime(timezone=True), nullable=False),
    sa.CheckConstraint('id = 1', name=op.f('ck_web_key_one_row')),
    sa.PrimaryKeyConstraint('id', name=op.f('pk_web_key'))
    )
    # The key is made here, once per catalogue, so every server sharing it checks the same hashes.
    op.bulk_insert(key, [{'id': 1, 'key_hex': secrets.token_hex(32), 'created_at': dt.datetime.now(dt.timezone.utc)}])
    for table in WRITTEN_TABLES:
        op.add_column(table, sa.Column('created_by', sa.String(length=200), nullable=True))
    # The query paths (issue 13 item 7): each scan's newest finished analysis.
    op.create_index('ix_analyses_scan_status_id', 'analyses', ['scan_id', 'status', 'id'], unique=False)
    if op.get_bind().dialect.name == 'postgresql':
        # Default privileges (a reporting role made before this migration) would let query sql read
        # password and token hashes and the key: only the catalogue owner keeps rights on them.
        bind = op.get_bind()
        for table in PRIVATE_TABLES:
            grantees = bind.execute(sa.text(
                "SELECT DISTINCT a.grantee FROM pg_class c, aclexplode(c.relacl) a"
                " WHERE c.oid = to_regclass(quote_ident(current_schema()) || '.' || :t) AND a.grantee <> c.relowner"),
                {'t': table}).scalars().all()
            for grantee in grantees:
                who = 'PUBLIC' if grantee == 0 else bind.execute(
                    sa.text("SELECT quote_ident(pg_get_userbyid(:g))"), {'g': grantee}).scalar()
                op.execute(f'REVOKE ALL ON TABLE "{table}" FROM {who}')


def downgrade() -> None:
    op.drop_index('ix_analyses_scan_status_id', table_name='analyses')
    for table in reversed(WRITTEN_TABLES):
        with op.batch_alter_table(table) as batch:
            batch.drop_column('created_by')
    op.drop_table('web_key')
    op.drop_index('ix_login_attempts_remote_at', table_name='login_attempts')
    op.drop_index('ix_login_attempts_username_at', table_name='login_attempts')
    op.drop_table('login_attempts')
    op.drop_index(op.f('ix_sessions_expires_at'), table_name='sessions')
    op.drop_index(op.f('ix_sessions_user_id'), table_name='sessions')
    op.drop_table('sessions')
    op.drop_index(op.f('ix_api_tokens_user_id'), table_name='api_tokens')
    op.drop_table('api_tokens')
    op.drop_table('users')
