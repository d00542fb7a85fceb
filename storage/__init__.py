"""Persistence adapters: the event-sourced application, the group-commit writer, the durable
inbox and delivery queue, and the lease that keeps one active center per name and store.

SQLAlchemy and eventsourcing's persistence live here (and in projections/), nowhere else.
"""
