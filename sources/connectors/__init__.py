"""Connectors: the push, poll and listing paths of data sources, one module per kind.

Push paths (``PushPath``: ``open(position)``, ``receive``, ``ack``, ``aclose``):

- :func:`redis_stream`: a Redis Streams consumer group (position: the entry id);
- :func:`nats_jetstream`: a NATS JetStream durable pull consumer (position: stream sequence);
- :func:`pg_notify`: rows of a PostgreSQL table read by position, ``LISTEN`` as a wake-up
  (position: ``"<tx>:<id>"``);
- :func:`iterator_path`: a user's async iterator (position: a counter; cannot resume after a
  restart).

Poll paths (``PollPath``): :func:`http_poll` (a URL with ``{cursor}``), :func:`callable_poll`
(a user's async callable). Listing (``ListPath``): :func:`http_list`.

Each module's docstring gives its message format and what it guarantees. Failures are
``SourceError`` with a kind (:mod:`.errors` maps every library's exceptions in one place);
a message that is not an item is handed out as a ``Received`` with its problem, never dropped.
Every path has ``aclose()``, safe to call twice; using a push path out of order raises
:class:`PathStateError`.
"""

from eventcenter.sources.connectors.callable_poll import CallablePoll, callable_poll
from eventcenter.sources.connectors.errors import PathStateError, classify
from eventcenter.sources.connectors.http_list import HttpList, http_list
from eventcenter.sources.connectors.http_poll import HttpPoll, http_poll
from eventcenter.sources.connectors.iterator import IteratorPath, iterator_path
from eventcenter.sources.connectors.nats_jetstream import NatsJetStreamPath, nats_jetstream
from eventcenter.sources.connectors.pg_notify import PgNotifyPath, pg_notify
from eventcenter.sources.connectors.redis_stream import RedisStreamPath, redis_stream

__all__ = [
    "CallablePoll",
    "HttpList",
    "HttpPoll",
    "IteratorPath",
    "NatsJetStreamPath",
    "PathStateError",
    "PgNotifyPath",
    "RedisStreamPath",
    "callable_poll",
    "classify",
    "http_list",
    "http_poll",
    "iterator_path",
    "nats_jetstream",
    "pg_notify",
    "redis_stream",
]
