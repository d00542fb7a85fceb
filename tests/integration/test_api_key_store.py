"""The API key store on SQLite and PostgreSQL: what it keeps, what it recognises."""

from __future__ import annotations

from collections.abc import Iterator

import pytest
from sqlalchemy import create_engine, text

from eventcenter.domain.errors import ApiKeyRefused
from eventcenter.storage.api_keys import ApiKeyStore, digest, key_id_of


@pytest.fixture
def store(database_url: str) -> Iterator[ApiKeyStore]:
    keys = ApiKeyStore(database_url)
    yield keys
    keys.close()


def test_a_store_without_the_table_has_no_key_and_knows_none(store: ApiKeyStore) -> None:
    assert store.all_keys() == []
    assert store.check("ek_0123456789_abcdefghijklmnopqrstuvwxyz") is None


def test_a_key_is_recognised_by_its_whole_text_and_stored_as_its_digest_only(
    store: ApiKeyStore, database_url: str
) -> None:
    row, key = store.create("acme", "ci", 10.0)

    assert key_id_of(key) == row.id
    assert store.check(key) == row
    assert store.check(key[:-1] + ("x" if key[-1] != "x" else "y")) is None
    assert store.check(key + "x") is None
    engine = create_engine(database_url)
    with engine.connect() as connection:
        stored = connection.execute(text("SELECT id, digest FROM center_api_keys")).all()
    engine.dispose()
    assert [tuple(r) for r in stored] == [(row.id, digest(key))]


def test_revoking_keeps_the_row_and_marks_it(store: ApiKeyStore) -> None:
    admin, admin_key = store.create(None, "", 1.0)
    tenant, _ = store.create("acme", "", 2.0)

    revoked, changed = store.revoke(admin.id, 3.0)
    again, changed_again = store.revoke(admin.id, 4.0)

    assert (changed, changed_again) == (True, False)
    assert revoked.revoked_at == again.revoked_at == 3.0
    assert [(k.id, k.admin, k.revoked_at) for k in store.all_keys()] == [
        (admin.id, True, 3.0),
        (tenant.id, False, None),
    ]
    checked = store.check(admin_key)
    assert checked is not None
    assert checked.revoked


@pytest.mark.parametrize("tenant", ["", "a/b", "..", ".hidden", "x" * 129, "caf\u00e9"])
def test_a_tenant_name_events_cannot_carry_is_refused(store: ApiKeyStore, tenant: str) -> None:
    with pytest.raises(ApiKeyRefused, match="tenant"):
        store.create(tenant, "", 1.0)
    assert store.all_keys() == []


def test_revoking_an_unknown_id_is_refused(store: ApiKeyStore) -> None:
    store.create("acme", "", 1.0)

    with pytest.raises(ApiKeyRefused, match="no API key 'ffffffffff'"):
        store.revoke("ffffffffff", 2.0)
