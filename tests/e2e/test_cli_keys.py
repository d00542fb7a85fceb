"""``eventcenter keys`` as an operator uses it, on SQLite and PostgreSQL: a key is printed once
and works at once against the HTTP API; the store never holds it; a revoked key stops
working; a wrong call is one line on stderr."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import httpx
import pytest
from sqlalchemy import create_engine, text

from eventcenter.center.app import EventCenter
from eventcenter.center.http import create_app
from eventcenter.center.settings import CenterSettings
from tests.e2e.test_cli import run


def keys(url: str, tmp_path: Path, *args: str, check: bool = True) -> Any:
    return run("keys", *args, "--database-url", url, cwd=tmp_path, check=check)


def created(url: str, tmp_path: Path, *args: str) -> dict[str, Any]:
    result = keys(url, tmp_path, "create", *args, "--json")
    found: dict[str, Any] = json.loads(result.stdout)
    return found


def listed(url: str, tmp_path: Path) -> list[dict[str, Any]]:
    out = keys(url, tmp_path, "list", "--json").stdout
    return [json.loads(line) for line in out.splitlines()]


def stored_text(url: str) -> str:
    """Every value of every row of the keys table, as text."""
    engine = create_engine(url)
    try:
        with engine.connect() as connection:
            rows = connection.execute(text("SELECT * FROM center_api_keys")).all()
    finally:
        engine.dispose()
    return " ".join(str(value) for row in rows for value in row)


async def status_with(url: str, tmp_path: Path, key: str, path: str = "/rca/cases") -> int:
    center = EventCenter(CenterSettings(database_url=url, data_dir=tmp_path))
    async with center:
        transport = httpx.ASGITransport(app=create_app(center))
        async with httpx.AsyncClient(transport=transport, base_url="http://center") as client:
            answer = await client.get(path, headers={"Authorization": f"Bearer {key}"})
    return answer.status_code


async def test_created_keys_are_listed_work_and_stop_working_once_revoked(
    database_url: str, tmp_path: Path
) -> None:
    tenant = created(database_url, tmp_path, "--tenant", "acme", "--label", "ci pipeline")
    admin = created(database_url, tmp_path, "--admin")

    assert tenant["key"].startswith(f"ek_{tenant['id']}_")
    assert (tenant["scope"], tenant["tenant"], tenant["label"]) == ("tenant", "acme", "ci pipeline")
    assert (admin["scope"], admin["tenant"]) == ("admin", None)
    rows = listed(database_url, tmp_path)
    assert [(r["id"], r["scope"], r["tenant"], r["revoked_at"]) for r in rows] == [
        (tenant["id"], "tenant", "acme", None),
        (admin["id"], "admin", None, None),
    ]
    assert all("key" not in row for row in rows)
    stored = stored_text(database_url)
    for key in (tenant["key"], admin["key"]):
        assert key.split("_", 2)[2] not in stored, "the secret is never stored"
    assert await status_with(database_url, tmp_path, tenant["key"]) == 200
    assert await status_with(database_url, tmp_path, admin["key"], "/health/report") == 200

    revoked = keys(database_url, tmp_path, "revoke", tenant["id"])
    again = keys(database_url, tmp_path, "revoke", tenant["id"])

    assert revoked.stdout.startswith(f"revoked key {tenant['id']}; a running server refuses it")
    assert again.stdout.startswith(f"key {tenant['id']} was revoked already")
    assert listed(database_url, tmp_path)[0]["revoked_at"] is not None
    assert await status_with(database_url, tmp_path, tenant["key"]) == 401


def test_create_prints_the_key_once_with_a_warning(tmp_path: Path) -> None:
    result = run(
        "keys", "create", "--tenant", "acme", "--data-dir", str(tmp_path / "data"), cwd=tmp_path
    )

    first, key = result.stdout.splitlines()
    assert first.startswith("created key for tenant acme: ")
    assert key.startswith("ek_")
    assert "only time the key is shown" in result.stderr
    table = run("keys", "list", "--data-dir", str(tmp_path / "data"), cwd=tmp_path).stdout
    assert "acme" in table
    assert key not in table


@pytest.fixture(scope="module")
def store_with_a_key(tmp_path_factory: pytest.TempPathFactory) -> Path:
    data = tmp_path_factory.mktemp("keys") / "data"
    run("keys", "create", "--admin", "--data-dir", str(data), cwd=data.parent)
    return data


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (("create",), "error: keys create needs either --tenant NAME or --admin (not both)"),
        (
            ("create", "--tenant", "acme", "--admin"),
            "error: keys create needs either --tenant NAME or --admin (not both)",
        ),
        (
            ("create", "--tenant", "../etc"),
            "error: tenant may hold ASCII letters, digits and _ . : @ - only (no '/' or '\\'),"
            " must not start with '.' and must not contain '..', got '../etc'",
        ),
        (
            ("create", "--tenant", "acme", "--label", "a\nb"),
            "error: a label has at most 200 printable characters (no control characters)",
        ),
        (
            ("revoke", "0123456789"),
            "error: no API key '0123456789' (eventcenter keys list shows them)",
        ),
    ],
)
def test_a_wrong_call_is_one_line_and_a_non_zero_exit(
    store_with_a_key: Path, args: tuple[str, ...], message: str
) -> None:
    data = store_with_a_key
    result = run("keys", *args, "--data-dir", str(data), cwd=data, check=False)

    assert result.returncode in (1, 2)
    assert result.stderr.splitlines() == [message]
    assert "Traceback" not in result.stderr


def test_list_and_revoke_on_a_store_that_is_not_there_say_so_and_create_nothing(
    tmp_path: Path,
) -> None:
    missing = tmp_path / "nowhere"
    for args in (("list",), ("revoke", "0123456789")):
        result = run("keys", *args, "--data-dir", str(missing), cwd=tmp_path, check=False)
        assert result.returncode == 1
        assert result.stderr.startswith(f"error: no store at {missing / 'center.db'}")
    assert not missing.exists()
