"""A store and its writer opened for a test, closed after: what the restart tests of the
stores behind the writer (breakers, recovery) build each "process" on."""

from __future__ import annotations

from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

from eventcenter.storage.application import CenterApplication
from eventcenter.storage.writer import StoreWriter


@asynccontextmanager
async def opened_writer(
    url: str, center: str = "default", snapshots: int = 100
) -> AsyncIterator[tuple[CenterApplication, StoreWriter]]:
    """The center's application on ``url`` (tables created) and an open writer for it."""
    app = CenterApplication(url)
    app.create_tables()
    writer = StoreWriter(app, center, snapshot_interval=snapshots)
    try:
        writer.open()
        yield app, writer
    finally:
        writer.close()
        app.close()
