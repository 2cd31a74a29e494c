"""The hub's schema: devices, events, agreement statistics, API tokens, audit log, model registry,
rollouts and their transitions, drift references, alerts and retraining triggers.

Revision ID: 0001
Revises:
Create Date: 2026-11-27 04:54:35.411382
"""

from __future__ import annotations

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0001"
down_revision: str | None = None
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    op.create_table(
        "agreement_stats",
        sa.Column("edge_model", sa.String(length=64), nullable=False),
        sa.Column("edge_model_version", sa.String(length=64), nullable=False),
        sa.Column("device_group", sa.String(length=64), nullable=False),
        sa.Column("judged", sa.BigInteger(), nullable=False),
        sa.Column("agreed", sa.BigInteger(), nullable=False),
        sa.Column("first_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("last_at", sa.DateTime(timezone=True), nullable=False),
        sa.PrimaryKeyConstraint("edge_model", "edge_model_version", "device_group"),
    )
    op.create_table(
        "api_tokens",
        sa.Column("id", sa.BigInteger().with_variant(sa.Integer(), "sqlite"), autoincrement=True, nullable=False),
        sa.Column("token_hash", sa.String(length=64), nullable=False),
        sa.Column(
            "scope",
            sa.Enum("admin", "operator", "read-only", "device", name="scope", native_enum=False, length=16),
            nullable=False,
        ),
        sa.Column("device_id", sa.String(length=64), nullable=True, comment="The one device a device token acts as."),
        sa.Column("label", sa.String(length=128), nullable=False),
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("revoked_at", sa.DateTime(timezone=True), nullable=True),
        sa.PrimaryKeyConstraint("id"),
        sa.UniqueConstraint("token_hash"),
    )
    op.create_table(
        "audit_log",
        sa.Column("id", sa.BigInteger().with_variant(sa.Integer(), "sqlite"), autoincrement=True, nullable=False),
        sa.Column("at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("token_id", sa.Integer(), nullable=True),
        sa.Column("scope", sa.String(length=16), nullable=True),
        sa.Column("device_id", sa.String(length=64), nullable=True),
        sa.Column("action", sa.String(length=128), nullable=False),
        sa.Column("target", sa.String(length=512), nullable=False),
        sa.Column("status", sa.Integer(), nullable=False),
        sa.Column("detail", sa.JSON(), nullable=False),
        sa.PrimaryKeyConstraint("id"),
    )
    with op.batch_alter_table("audit_log", schema=None) as batch_op:
        batch_op.create_index("ix_audit_log_at", ["at"], unique=False)

    op.create_table(
        "devices",
        sa.Column("device_id", sa.String(length=64), nullable=False),
        sa.Column("site", sa.String(length=64), nullable=False),
        sa.Column(
            "device_group",
            sa.String(length=64),
            nullable=False,
            comment="The group rollouts and drift detection address; the site unless registered.",
        ),
        sa.Column(
            "registered_at",
            sa.DateTime(timezone=True),
            nullable=True,
            comment="When an operator registered it (POST /devices).",
        ),
        sa.Column(
            "edge_model", sa.String(length=64), nullable=True, comment="The edge model of its latest escalation."
        ),
        sa.Column("edge_model_version", sa.String(length=64), nullable=True),
        sa.Column(
            "status",
            sa.Enum("online", "offline", "unknown", name="devicestatus", native_enum=False, length=16),
            nullable=False,
        ),
        sa.Column(
            "status_since",
            sa.DateTime(timezone=True),
            nullable=True,
            comment="Timestamp of the message that set the status; older messages do not change it.",
        ),
        sa.Column("firmware_version", sa.String(length=64), nullable=True),
        sa.Column("streams", sa.JSON(), nullable=False),
        sa.Column("first_seen", sa.DateTime(timezone=True), nullable=False),
        sa.Column("last_seen", sa.DateTime(timezone=True), nullable=False),
        sa.Column("last_health", sa.JSON(), nullable=True),
        sa.Column("last_health_at", sa.DateTime(timezone=True), nullable=True),
        sa.Column("last_death_reason", sa.String(length=256), nullable=True),
        sa.PrimaryKeyConstraint("device_id"),
    )
    with op.batch_alter_table("devices", schema=None) as batch_op:
        batch_op.create_index(batch_op.f("ix_devices_device_group"), ["device_group"], unique=False)
        batch_op.create_index(batch_op.f("ix_devices_site"), ["site"], unique=False)

    op.create_table(
        "drift_alerts",
        sa.Column("id", sa.BigInteger().with_variant(sa.Integer(), "sqlite"), autoincrement=True, nullable=False),
        sa.Column("at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("device_group", sa.String(length=64), nullable=False),
        sa.Column("model", sa.String(length=64), nullable=False),
        sa.Column("model_version", sa.String(length=64), nullable=False),
        sa.Column("metric", sa.String(length=32), nullable=False),
        sa.Column("psi", sa.Float(), nullable=False),
        sa.Column("ks", sa.Float(), nullable=False),
        sa.Column("ks_p_value", sa.Float(), nullable=False),
        sa.Column("threshold_psi", sa.Float(), nullable=False),
        sa.Column("live_count", sa.Integer(), nullable=False),
        sa.Column("reference_count", sa.Integer(), nullable=False),
        sa.Column(
            "live_last_id",
            sa.BigInteger().with_variant(sa.Integer(), "sqlite"),
            nullable=False,
            comment="Newest event of the live window.",
        ),
        sa.PrimaryKeyConstraint("id"),
    )
    with op.batch_alter_table("drift_alerts", schema=None) as batch_op:
        batch_op.create_index("ix_drift_alerts_key_at", ["device_group", "model", "model_version", "at"], unique=False)

    op.create_table(
        "drift_references",
        sa.Column("id", sa.BigInteger().with_variant(sa.Integer(), "sqlite"), autoincrement=True, nullable=False),
        sa.Column("device_group", sa.String(length=64), nullable=False),
        sa.Column("model", sa.String(length=64), nullable=False),
        sa.Column("model_version", sa.String(length=64), nullable=False),
        sa.Column("metric", sa.String(length=32), nullable=False),
        sa.Column("source", sa.String(length=32), nullable=False, comment="'first_observations' or 'manifest'."),
        sa.Column("sample", sa.JSON(), nullable=False),
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
        sa.PrimaryKeyConstraint("id"),
        sa.UniqueConstraint("device_group", "model", "model_version", "metric", name="uq_drift_references_key"),
    )
    op.create_table(
        "events",
        sa.Column("id", sa.BigInteger().with_variant(sa.Integer(), "sqlite"), autoincrement=True, nullable=False),
        sa.Column("message_id", sa.String(length=64), nullable=False, comment="The idempotency key."),
        sa.Column("device_id", sa.String(length=64), nullable=False),
        sa.Column("site", sa.String(length=64), nullable=False),
        sa.Column(
            "kind",
            sa.Enum("escalation", "error", "birth", "death", name="eventkind", native_enum=False, length=16),
            nullable=False,
        ),
        sa.Column("stream", sa.String(length=64), nullable=True),
        sa.Column("occurred_at", sa.DateTime(timezone=True), nullable=False, comment="The message's own timestamp."),
        sa.Column("received_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("edge_model", sa.String(length=64), nullable=True),
        sa.Column("edge_model_version", sa.String(length=64), nullable=True),
        sa.Column("edge_label", sa.String(length=64), nullable=True),
        sa.Column("edge_confidence", sa.Double(), nullable=True),
        sa.Column("edge_anomaly_score", sa.Double(), nullable=True),
        sa.Column("verdict_model", sa.String(length=64), nullable=True),
        sa.Column("verdict_model_version", sa.String(length=64), nullable=True),
        sa.Column("verdict_label", sa.String(length=64), nullable=True),
        sa.Column("verdict_confidence", sa.Double(), nullable=True),
        sa.Column("verdict_anomaly_score", sa.Double(), nullable=True),
        sa.Column("agrees", sa.Boolean(), nullable=True),
        sa.Column("input_mean", sa.Double(), nullable=True, comment="Mean of the escalated window (drift detection)."),
        sa.Column("input_std", sa.Double(), nullable=True, comment="Standard deviation of the escalated window."),
        sa.Column("reasons", sa.JSON(), nullable=False),
        sa.Column("detail", sa.JSON(), nullable=False),
        sa.Column(
            "verdict_message",
            sa.JSON(),
            nullable=True,
            comment="The verdict as sent (wire names), sent again when the escalation arrives again.",
        ),
        sa.PrimaryKeyConstraint("id"),
        sa.UniqueConstraint("message_id"),
    )
    with op.batch_alter_table("events", schema=None) as batch_op:
        batch_op.create_index("ix_events_device_occurred", ["device_id", "occurred_at"], unique=False)
        batch_op.create_index(
            "ix_events_edge_version_occurred", ["edge_model", "edge_model_version", "occurred_at"], unique=False
        )
        batch_op.create_index("ix_events_kind_occurred", ["kind", "occurred_at"], unique=False)
        batch_op.create_index("ix_events_site_occurred", ["site", "occurred_at"], unique=False)

    op.create_table(
        "models",
        sa.Column("id", sa.BigInteger().with_variant(sa.Integer(), "sqlite"), autoincrement=True, nullable=False),
        sa.Column("name", sa.String(length=64), nullable=False),
        sa.Column("version", sa.String(length=64), nullable=False),
        sa.Column("role", sa.String(length=16), nullable=False),
        sa.Column("task", sa.String(length=128), nullable=False),
        sa.Column("sha256", sa.String(length=64), nullable=False),
        sa.Column("size_bytes", sa.BigInteger(), nullable=False),
        sa.Column("manifest", sa.JSON(), nullable=False),
        sa.Column("card", sa.JSON(), nullable=True),
        sa.Column("artifact", sa.LargeBinary(), nullable=False),
        sa.Column("uploaded_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("uploaded_by", sa.Integer(), nullable=True, comment="The API token that uploaded it."),
        sa.PrimaryKeyConstraint("id"),
        sa.UniqueConstraint("name", "version", name="uq_models_name_version"),
    )
    op.create_table(
        "rollouts",
        sa.Column("id", sa.BigInteger().with_variant(sa.Integer(), "sqlite"), autoincrement=True, nullable=False),
        sa.Column("model_name", sa.String(length=64), nullable=False),
        sa.Column("model_version", sa.String(length=64), nullable=False),
        sa.Column("incumbent_version", sa.String(length=64), nullable=True),
        sa.Column("device_group", sa.String(length=64), nullable=False),
        sa.Column("canary_percent", sa.Float(), nullable=False),
        sa.Column("min_samples", sa.Integer(), nullable=False),
        sa.Column("tolerance", sa.Float(), nullable=False),
        sa.Column(
            "state",
            sa.Enum("canary", "promoted", "rolled_back", "aborted", name="rolloutstate", native_enum=False, length=16),
            nullable=False,
        ),
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("updated_at", sa.DateTime(timezone=True), nullable=False),
        sa.PrimaryKeyConstraint("id"),
    )
    with op.batch_alter_table("rollouts", schema=None) as batch_op:
        batch_op.create_index("ix_rollouts_group_state", ["device_group", "state"], unique=False)

    op.create_table(
        "retraining_triggers",
        sa.Column("id", sa.BigInteger().with_variant(sa.Integer(), "sqlite"), autoincrement=True, nullable=False),
        sa.Column("at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("device_group", sa.String(length=64), nullable=False),
        sa.Column("model", sa.String(length=64), nullable=False),
        sa.Column("model_version", sa.String(length=64), nullable=False),
        sa.Column("reason", sa.String(length=512), nullable=False),
        sa.Column("alert_id", sa.BigInteger().with_variant(sa.Integer(), "sqlite"), nullable=True),
        sa.Column("consumed_at", sa.DateTime(timezone=True), nullable=True),
        sa.Column("consumed_by", sa.String(length=64), nullable=True),
        sa.ForeignKeyConstraint(["alert_id"], ["drift_alerts.id"], ondelete="SET NULL"),
        sa.PrimaryKeyConstraint("id"),
    )
    with op.batch_alter_table("retraining_triggers", schema=None) as batch_op:
        batch_op.create_index("ix_retraining_triggers_open", ["consumed_at", "id"], unique=False)

    op.create_table(
        "rollout_transitions",
        sa.Column("id", sa.BigInteger().with_variant(sa.Integer(), "sqlite"), autoincrement=True, nullable=False),
        sa.Column("rollout_id", sa.BigInteger().with_variant(sa.Integer(), "sqlite"), nullable=False),
        sa.Column("at", sa.DateTime(timezone=True), nullable=False),
        sa.Column(
            "from_state",
            sa.Enum("canary", "promoted", "rolled_back", "aborted", name="rolloutstate", native_enum=False, length=16),
            nullable=True,
        ),
        sa.Column(
            "to_state",
            sa.Enum("canary", "promoted", "rolled_back", "aborted", name="rolloutstate", native_enum=False, length=16),
            nullable=False,
        ),
        sa.Column("reason", sa.String(length=512), nullable=False),
        sa.Column("actor", sa.String(length=64), nullable=False),
        sa.Column("detail", sa.JSON(), nullable=False),
        sa.ForeignKeyConstraint(["rollout_id"], ["rollouts.id"], ondelete="CASCADE"),
        sa.PrimaryKeyConstraint("id"),
    )
    with op.batch_alter_table("rollout_transitions", schema=None) as batch_op:
        batch_op.create_index("ix_rollout_transitions_rollout", ["rollout_id", "id"], unique=False)


def downgrade() -> None:
    with op.batch_alter_table("rollout_transitions", schema=None) as batch_op:
        batch_op.drop_index("ix_rollout_transitions_rollout")

    op.drop_table("rollout_transitions")
    with op.batch_alter_table("retraining_triggers", schema=None) as batch_op:
        batch_op.drop_index("ix_retraining_triggers_open")

    op.drop_table("retraining_triggers")
    with op.batch_alter_table("rollouts", schema=None) as batch_op:
        batch_op.drop_index("ix_rollouts_group_state")

    op.drop_table("rollouts")
    op.drop_table("models")
    with op.batch_alter_table("events", schema=None) as batch_op:
        batch_op.drop_index("ix_events_site_occurred")
        batch_op.drop_index("ix_events_kind_occurred")
        batch_op.drop_index("ix_events_edge_version_occurred")
        batch_op.drop_index("ix_events_device_occurred")

    op.drop_table("events")
    op.drop_table("drift_references")
    with op.batch_alter_table("drift_alerts", schema=None) as batch_op:
        batch_op.drop_index("ix_drift_alerts_key_at")

    op.drop_table("drift_alerts")
    with op.batch_alter_table("devices", schema=None) as batch_op:
        batch_op.drop_index(batch_op.f("ix_devices_site"))
        batch_op.drop_index(batch_op.f("ix_devices_device_group"))

    op.drop_table("devices")
    with op.batch_alter_table("audit_log", schema=None) as batch_op:
        batch_op.drop_index("ix_audit_log_at")

    op.drop_table("audit_log")
    op.drop_table("api_tokens")
    op.drop_table("agreement_stats")
