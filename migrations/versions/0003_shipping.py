"""Shipping: webhooks (per-job URL and events, per-key signing secret, delivery outbox).

Revision ID: 0003
Revises: 0002
Create Date: 2026-12-02 08:00:00
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = '0003'
down_revision: str | None = '0002'
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    with op.batch_alter_table('api_keys', schema=None) as batch_op:
        batch_op.add_column(sa.Column('webhook_secret', sa.String(length=64), nullable=True))
        batch_op.add_column(sa.Column('webhook_secret_previous', sa.String(length=64), nullable=True))
        batch_op.add_column(sa.Column('webhook_secret_rotated_at', sa.DateTime(timezone=True), nullable=True))

    with op.batch_alter_table('jobs', schema=None) as batch_op:
        batch_op.add_column(sa.Column('webhook_url', sa.String(length=2048), nullable=True))
        batch_op.add_column(sa.Column('webhook_events', sa.JSON(), nullable=True))

    op.create_table('webhook_deliveries',
    sa.Column('id', sa.String(length=40), nullable=False),
    sa.Column('job_id', sa.String(length=40), nullable=False),
    sa.Column('event', sa.String(length=40), nullable=False),
    sa.Column('url', sa.String(length=2048), nullable=False),
    sa.Column('body', sa.Text(), nullable=False),
    sa.Column('status', sa.String(length=20), nullable=False),
    sa.Column('attempts', sa.Integer(), nullable=False),
    sa.Column('next_attempt_at', sa.DateTime(timezone=True), nullable=False),
    sa.Column('created_at', sa.DateTime(timezone=True), nullable=False),
    sa.Column('finished_at', sa.DateTime(timezone=True), nullable=True),
    sa.Column('last_error', sa.Text(), nullable=True),
    sa.ForeignKeyConstraint(['job_id'], ['jobs.id'], name=op.f('fk_webhook_deliveries_job_id_jobs'), ondelete='CASCADE'),
    sa.PrimaryKeyConstraint('id', name=op.f('pk_webhook_deliveries'))
    )
    with op.batch_alter_table('webhook_deliveries', schema=None) as batch_op:
        batch_op.create_index(batch_op.f('ix_webhook_deliveries_job_id'), ['job_id'], unique=False)
        batch_op.create_index('ix_webhook_deliveries_status_next', ['status', 'next_attempt_at'], unique=False)


def downgrade() -> None:
    with op.batch_alter_table('webhook_deliveries', schema=None) as batch_op:
        batch_op.drop_index('ix_webhook_deliveries_status_next')
        batch_op.drop_index(batch_op.f('ix_webhook_deliveries_job_id'))

    op.drop_table('webhook_deliveries')
    with op.batch_alter_table('jobs', schema=None) as batch_op:
        batch_op.drop_column('webhook_events')
        batch_op.drop_column('webhook_url')

    with op.batch_alter_table('api_keys', schema=None) as batch_op:
        batch_op.drop_column('webhook_secret_rotated_at')
        batch_op.drop_column('webhook_secret_previous')
        batch_op.drop_column('webhook_secret')
