"""Composition root and runtime: settings, the EventCenter object, persistence, CLI."""
