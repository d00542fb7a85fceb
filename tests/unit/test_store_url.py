"""The store's PostgreSQL connections notice a silent peer: libpq keepalive settings."""

from __future__ import annotations

from sqlalchemy.engine import make_url

from eventcenter.storage.application import LIBPQ_DEFAULTS, with_keepalives


def test_a_psycopg2_url_gets_keepalives_and_keeps_its_own_settings() -> None:
    url = "postgresql+psycopg2://ops:s3cret@db:5432/center?options=-csearch_path%3Dx&keepalives_idle=60"
    query = make_url(with_keepalives(url)).query
    assert query["keepalives_idle"] == "60", "a setting the URL gives wins"
    assert query["options"] == "-csearch_path=x"
    for key, value in LIBPQ_DEFAULTS.items():
        if key != "keepalives_idle":
            assert query[key] == value
    assert make_url(with_keepalives(url)).password == "s3cret"


def test_other_urls_are_unchanged() -> None:
    assert with_keepalives("sqlite:////tmp/center.db") == "sqlite:////tmp/center.db"
