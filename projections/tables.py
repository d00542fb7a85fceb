"""The read model's tables: flat rows, indexed for the audit queries (SQLAlchemy Core).

``center_audit`` holds one row per decision (its notification id is the key, so a decision
recorded once appears once, however often the log is read); its indexes serve the audit
filters (tenant, kind, source, correlation chain, aggregate), each in time order. The other
tables are current state: one row per dead letter, per data source, and per aggregate seen
(its subject). The tracking row (eventsourcing's ``notification_tracking`` record, in
``center_read_tracking``) is written in the same transaction as the rows.
"""

from __future__ import annotations

from sqlalchemy import (
    BigInteger,
    Column,
    Float,
    Index,
    Integer,
    MetaData,
    String,
    Table,
    Text,
)

metadata = MetaData()

TRACKING_TABLE = "center_read_tracking"

audit = Table(
    "center_audit",
    metadata,
    Column("position", BigInteger, primary_key=True, autoincrement=False),
    Column("at", Float(precision=53), nullable=False),
    Column("tenant", String(200), nullable=False),
    Column("source", String(200), nullable=False),
    Column("kind", String(120), nullable=False),
    Column("aggregate", String(40), nullable=False),
    Column("aggregate_id", String(36), nullable=False),
    Column("version", Integer, nullable=False),
    Column("subject", String(400), nullable=False),
    Column("from_state", String(120), nullable=False),
    Column("to_state", String(120), nullable=False),
    Column("reason", Text, nullable=False),
    Column("correlation_id", String(200), nullable=False),
    Column("cause", String(200), nullable=False),
    Column("details", Text, nullable=False),
    Index("center_audit_at_idx", "at", "position"),
    Index("center_audit_tenant_idx", "tenant", "at", "position"),
    Index("center_audit_tenant_kind_idx", "tenant", "kind", "at", "position"),
    Index("center_audit_kind_idx", "kind", "at", "position"),
    Index("center_audit_source_idx", "tenant", "source", "at", "position"),
    Index("center_audit_correlation_idx", "correlation_id", "at", "position"),
    Index("center_audit_aggregate_idx", "aggregate_id", "position"),
)

subjects = Table(
    "center_audit_subjects",
    metadata,
    Column("aggregate_id", String(36), primary_key=True),
    Column("aggregate", String(40), nullable=False),
    Column("tenant", String(200), nullable=False),
    Column("source", String(200), nullable=False),
    Column("name", String(400), nullable=False),
    Column("correlation_id", String(200), nullable=False),
    Index("center_audit_subjects_correlation_idx", "correlation_id"),
)

dead_letters = Table(
    "center_dead_letter_view",
    metadata,
    Column("id", String(36), primary_key=True),
    Column("position", BigInteger, nullable=False),
    Column("at", Float(precision=53), nullable=False),
    Column("tenant", String(200), nullable=False),
    Column("event_type", String(200), nullable=False),
    Column("subscription", String(200), nullable=False),
    Column("error_type", String(200), nullable=False),
    Column("error", Text, nullable=False),
    Column("attempts", Integer, nullable=False),
    Column("status", String(20), nullable=False),
    Column("replayed_at", Float(precision=53), nullable=True),
    Column("replay_of", String(36), nullable=False),
    Column("failed_again_as", String(36), nullable=False),
    Column("envelope", Text, nullable=False),
    Index("center_dead_letter_view_tenant_idx", "tenant", "position"),
    Index("center_dead_letter_view_status_idx", "status", "position"),
)

sources = Table(
    "center_source_view",
    metadata,
    Column("aggregate_id", String(36), primary_key=True),
    Column("tenant", String(200), nullable=False),
    Column("name", String(200), nullable=False),
    Column("mode", String(40), nullable=False),
    Column("position", BigInteger, nullable=False),
    Column("row", Text, nullable=False),
    Index("center_source_view_key_idx", "tenant", "name"),
)

#: The tables a rebuild empties (tracking aside), children first.
VIEW_TABLES = (audit, subjects, dead_letters, sources)
