"""The locustfile of the PressureTester: runs ONLY inside the Locust process.

Never import this module anywhere else: importing Locust monkey-patches the standard library
(sockets, threads, time) for gevent, which breaks asyncio (LIBRARIES.md). The tester starts
``python -m locust -f <this file> --headless`` with the spec file named in the environment
(:data:`~eventcenter.pressure.step_search.SPEC_ENV`).

It stays thin: the search, the sizing, the pacing and the measurement are plain code in
:mod:`~eventcenter.pressure.step_search` and :mod:`~eventcenter.pressure.step_meter`. Here the
load shape drives the search once a second, each user paces its requests by the search's
current interval, and Locust's request event reports each answer to the search's meter.
"""

from __future__ import annotations

import os
import time
from pathlib import Path
from typing import Any

import gevent
from locust import FastHttpUser, LoadTestShape, constant, events, task

from eventcenter.pressure.step_meter import LAG_PROBE_S, Pacer
from eventcenter.pressure.step_search import SPEC_ENV, SearchSpec, StepSearch, append_line

#: Key of the request context that carries (meter, token) to the request event.
_CONTEXT_KEY = "eventcenter_pressure"


class StepSearchShape(LoadTestShape):
    """Runs the whole search (see :class:`StepSearch`); the test ends when it answers None."""

    def __init__(self) -> None:
        super().__init__()  # type: ignore[no-untyped-call]
        spec = SearchSpec.from_json(Path(os.environ[SPEC_ENV]).read_text(encoding="utf-8"))
        self.search = StepSearch(spec, append_line(spec.progress))
        # A request that never answers fails after this long (until then it counts as
        # waiting, see StepMeter.measure): long enough not to cut a slow but valid answer.
        timeout = max(5.0, 10.0 * spec.rule.slo_p95)
        PacedUser.network_timeout = timeout
        PacedUser.connection_timeout = timeout
        gevent.spawn(_watch_loop, self.search)

    def tick(self) -> tuple[int, float] | None:
        return self.search.tick(time.time(), time.process_time())


class PacedUser(FastHttpUser):
    """Starts one request per interval of the current step, on a schedule (see Pacer)."""

    wait_time = constant(0)

    def on_start(self) -> None:
        self.pacer = Pacer()

    @task
    def offer(self) -> None:
        shape = self.environment.shape_class
        if not isinstance(shape, StepSearchShape):
            raise RuntimeError("the pressure locustfile runs with its own load shape only")
        search = shape.search
        delay = self.pacer.delay(time.time(), search.interval, search.epoch)
        if delay > 0:
            gevent.sleep(delay)
        meter = search.meter
        token = meter.begin(time.time())
        self.client.get(search.spec.path, name="target", context={_CONTEXT_KEY: (meter, token)})


def _watch_loop(search: StepSearch) -> None:
    """Record how late the event loop wakes from a short sleep: a loop that cannot keep
    its own schedule (out of CPU, or starved of it) cannot keep the users' schedule either,
    and its latencies include its own delay."""
    while search.finished is None:
        before = time.monotonic()
        gevent.sleep(LAG_PROBE_S)
        search.meter.lagged(time.time(), max(0.0, time.monotonic() - before - LAG_PROBE_S))


def _answered(
    context: dict[str, Any] | None,
    response_time: float,
    exception: BaseException | None,
    **_: Any,
) -> None:
    reference = (context or {}).get(_CONTEXT_KEY)
    if reference is not None:
        meter, token = reference
        meter.end(token, time.time(), response_time / 1000.0, exception is not None)


events.request.add_listener(_answered)  # type: ignore[no-untyped-call]
