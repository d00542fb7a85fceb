"""Creating missing tables when another process may be creating them at the same moment.

``metadata.create_all(checkfirst=True)`` looks, then creates: two processes that look at the
same time both decide to create, and the second one's ``CREATE TABLE`` fails: SQLite says
``table ... already exists``; PostgreSQL, whose DDL is transactional, makes the second wait
for the first to commit and then refuses it with a unique violation on its catalog
(``pg_type_typname_nsp_index``) or ``duplicate_table``. That happens in practice when
``eventcenter keys create`` runs while a center starts on a new database.

:func:`retry_created_concurrently` runs such a transaction again when it failed that way: the
failed transaction was rolled back, and on the next try the table is there and is skipped.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import TypeVar

from sqlalchemy.exc import DBAPIError

from eventcenter.domain.errors import causes

T = TypeVar("T")

#: PostgreSQL error codes of a CREATE that lost to a concurrent one: duplicate_object (a type,
#: an index), duplicate_table; and unique_violation, but only on the system catalog's own
#: indexes (on any other it is a row that conflicts, such as a version already stored).
_PG_DUPLICATE = frozenset({"42710", "42P07"})
_PG_UNIQUE_VIOLATION = "23505"
_PG_CATALOG_INDEXES = ("pg_type_typname_nsp_index", "pg_class_relname_nsp_index")

#: Tries in all. Each lost race means another process made one more of the tables: a creator
#: can lose once per table the two of them create, and the transactions here create a few.
ATTEMPTS = 5


def created_concurrently(error: BaseException) -> bool:
    """True if ``error`` says a table (or its type or index) was created by someone else.
    The driver's error may come wrapped (eventsourcing's persistence errors wrap SQLAlchemy's):
    the chain of causes is searched."""
    found = next((cause for cause in causes(error) if isinstance(cause, DBAPIError)), None)
    if found is None:
        return False
    code = getattr(found.orig, "pgcode", None)
    if code == _PG_UNIQUE_VIOLATION:
        return any(index in str(found.orig) for index in _PG_CATALOG_INDEXES)
    if code is not None:
        return code in _PG_DUPLICATE
    return "already exists" in str(found.orig)


def retry_created_concurrently(attempt: Callable[[], T], attempts: int = ATTEMPTS) -> T:
    """``attempt()``, run again (up to ``attempts`` times in all) while it fails because
    another process created one of its tables first. ``attempt`` must be one whole
    transaction that creates missing tables with ``checkfirst``: it is rolled back before the
    next try. Any other error, or the last one, is raised as it is."""
    for _ in range(attempts - 1):
        try:
            return attempt()
        except Exception as error:
            if not created_concurrently(error):
                raise
    return attempt()
