"""Processes that create the store's tables at the same moment, on SQLite and PostgreSQL.

``eventcenter keys create`` run while a center starts on a new database, or two centers of
different names starting together, each find a table missing and create it: the loser's
CREATE used to fail ("table center_api_keys already exists" on SQLite, a unique violation on
PostgreSQL's catalog) and with it the command or the center's start. Threads stand for the
processes here: each has its own engine and connections, as a process would.
"""

from __future__ import annotations

import asyncio
import threading
from collections.abc import Callable, Sequence
from functools import partial
from pathlib import Path

from sqlalchemy import create_engine, text

from eventcenter.center.app import EventCenter
from eventcenter.center.settings import CenterSettings
from eventcenter.storage.api_keys import ApiKeyStore

ROUNDS = 3
AT_ONCE = 6


def all_at_once(jobs: Sequence[Callable[[], object]]) -> list[str]:
    """Run ``jobs`` in threads released together; what each one raised, as text."""
    barrier = threading.Barrier(len(jobs))
    errors: list[str] = []

    def run(job: Callable[[], object]) -> None:
        barrier.wait()
        try:
            job()
        except Exception as error:  # collected: the test shows every failure
            errors.append(f"{type(error).__name__}: {error}")

    threads = [threading.Thread(target=run, args=(job,)) for job in jobs]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(60)
    return errors


def drop_key_table(url: str) -> None:
    engine = create_engine(url)
    with engine.begin() as connection:
        connection.execute(text("DROP TABLE IF EXISTS center_api_keys"))
    engine.dispose()


def count_keys(url: str) -> int:
    engine = create_engine(url)
    with engine.connect() as connection:
        count = connection.execute(text("SELECT count(*) FROM center_api_keys")).scalar_one()
    engine.dispose()
    return int(count)


def test_keys_created_at_once_on_a_store_without_the_table_all_succeed(
    database_url: str,
) -> None:
    for _ in range(ROUNDS):
        stores = [ApiKeyStore(database_url) for _ in range(AT_ONCE)]
        try:
            errors = all_at_once([partial(store.create, "acme", "ci", 1.0) for store in stores])
        finally:
            for store in stores:
                store.close()

        assert errors == []
        assert count_keys(database_url) == AT_ONCE
        drop_key_table(database_url)


def start_and_stop(center: EventCenter) -> None:
    async def run() -> None:
        try:
            await center.start()
            await center.stop()
        finally:
            center.close()

    asyncio.run(run())


def test_centers_start_on_a_new_store_while_keys_are_created(
    database_url: str, tmp_path: Path
) -> None:
    # built one after the other: the persistence module defines its record classes at
    # construction, which threads of one process must not do at once (processes don't share them)
    centers = [
        EventCenter(
            CenterSettings(name=f"c{i}", database_url=database_url, data_dir=tmp_path / f"c{i}"),
            builtin_handlers=False,
        )
        for i in range(3)
    ]
    stores = [ApiKeyStore(database_url) for _ in range(3)]
    try:
        errors = all_at_once(
            [partial(start_and_stop, center) for center in centers]
            + [partial(store.create, None, "admin", 1.0) for store in stores]
        )
    finally:
        for store in stores:
            store.close()

    assert errors == []
    assert count_keys(database_url) == len(stores)
    engine = create_engine(database_url)
    with engine.connect() as connection:
        commit_rows = connection.execute(
            text("SELECT center FROM center_commits ORDER BY center")
        ).scalars()
        assert list(commit_rows) == ["c0", "c1", "c2"]
    engine.dispose()
