"""Prometheus metrics of a center, read at scrape time from what the center already counts.

Nothing here runs on the hot path: :class:`CenterCollector` reads the processor's snapshot
(its bounded counter tables), the subscriptions, the processor state machine, the sources'
modes and pauses, the breakers and the tuning workflow only when ``GET /metrics`` is scraped. The
collector is registered on a :class:`~prometheus_client.CollectorRegistry` of its own
(:func:`center_registry`), never on the process-wide default one: one process may hold many
centers (tests do), and each one's ``/metrics`` shows its own figures only.

Label sets stay bounded: ``type`` and ``tenant`` come from the processor's tables, which count
the first ``metrics_max_types`` types and ``metrics_max_tenants`` tenants by name and the rest
under ``(other)``; subscriptions, sources and breakers are as many as are configured; states
and modes are the state machines' fixed lists.

The processor's figures belong to the event loop: scrape from a coroutine on the center's loop
(as the HTTP app does), not from another thread.

Metrics (counters end in ``_total``):

- ``eventcenter_type_events_<outcome>_total{type}`` and
  ``eventcenter_tenant_events_<outcome>_total{tenant}``, for the outcomes ``published``
  (events admitted), ``handled``, ``failed`` (handler attempts that raised), ``retried`` and
  ``dead_lettered`` (deliveries): the same counts seen by type and by tenant; either family
  sums to the center's total.
- ``eventcenter_subscription_deliveries_queued{subscription}``: deliveries accepted for the
  subscription and not ended yet (in memory and in the store): the subscription's lag, in
  deliveries. ``eventcenter_subscription_deliveries_in_store{subscription}`` is the part of it
  that waits in the store only (beyond ``memory_window``),
  ``eventcenter_subscription_deliveries_in_flight{subscription}`` the handler attempts running
  now, ``eventcenter_subscription_paused{subscription}`` 1 while it is paused.
- ``eventcenter_handler_duration_seconds{subscription}``: a histogram of handler attempts'
  durations (failed ones too), and ``eventcenter_dispatch_wait_seconds``: a histogram of the
  time from admission to a first attempt's start; ``eventcenter_oldest_wait_seconds``: how
  long the delivery waiting longest in memory has waited.
- ``eventcenter_processor_state{state}``: 1 for the processor's current state (``stable``,
  ``adjusting``, ``load_testing``), 0 for the others.
- ``eventcenter_source_mode{tenant, source, mode}``: 1 for each running source's current mode
  (for a paused source, the mode it resumes in).
- ``eventcenter_source_paused{tenant, source}``: 1 while an operator has the source paused.
- ``eventcenter_source_mode_switches_total{tenant, source}``: the switches each source's log
  has recorded (the store's figure, restored when the source starts again).
- ``eventcenter_source_health{tenant, source}``: each running source's health score in
  ``[0, 1]``; ``eventcenter_source_items_total{tenant, source, path}``: items that arrived by
  ``push`` and by ``poll`` since the source started.
- ``eventcenter_breaker_state{breaker, state}``: 1 for each circuit breaker's current state.
- ``eventcenter_tuning_busy``: 1 while a tuning run is in progress.
- ``eventcenter_rca_cases_total{category, outcome}``: RCA cases ``opened``, closed as
  ``healed`` (a strategy's re-check passed) or ``recovered`` (by itself), ``escalated``,
  ``acknowledged`` and ``resolved`` (by a person), since the process started;
  ``eventcenter_rca_cases_open{category}``: cases open now;
  ``eventcenter_rca_failures_total{category}``: failures analysed. Categories are the rules'
  (a bounded set).
- ``eventcenter_store_available``: 1 while the store answers; ``eventcenter_store_outages_total``:
  times it became unreachable; ``eventcenter_store_errors_total{kind}``: failed writes, kind
  ``unavailable`` (an attempt of a batch that could not reach the store, retried) or
  ``refused`` (a write the store refused, reported to its caller);
  ``eventcenter_store_transactions_total``: transactions committed.
- ``eventcenter_projection_lag_events``: notifications the read model (``projections/``) has
  still to process, as of its runner's last pass (each ``[projections] interval`` and after
  commits); ``eventcenter_projection_position``: the last one it processed;
  ``eventcenter_projection_running``: 1 while its runner runs;
  ``eventcenter_projection_errors_total``: passes that failed (retried with back-off).
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator, Mapping

from prometheus_client.core import (
    CounterMetricFamily,
    GaugeMetricFamily,
    HistogramMetricFamily,
    Metric,
)
from prometheus_client.registry import Collector, CollectorRegistry

from eventcenter.center.app import EventCenter
from eventcenter.domain import breaker as breaker_states
from eventcenter.domain import fsm, source_modes
from eventcenter.handlers.metrics import LatencyWindow

__all__ = ["OUTCOMES", "CenterCollector", "center_registry"]

#: The processor counters exposed, with what each one counts.
OUTCOMES: Mapping[str, str] = {
    "published": "events admitted (duplicates not included)",
    "handled": "deliveries a handler completed",
    "failed": "handler attempts that raised",
    "retried": "retries scheduled",
    "dead_lettered": "deliveries given up on and kept as dead letters",
}


class CenterCollector(Collector):
    """Yields the metrics of one center, computed from its state at each scrape."""

    def __init__(self, center: EventCenter) -> None:
        self._center = center

    def collect(self) -> Iterator[Metric]:
        center = self._center
        processor = center.processor
        snapshot = processor.snapshot()
        yield from _outcomes("type", snapshot.by_type)
        yield from _outcomes("tenant", snapshot.by_tenant)

        yield from self._subscriptions()

        yield _one_of(
            "eventcenter_processor_state",
            "1 for the processor's current state, 0 for the others.",
            [],
            [([], processor.state.state)],
            fsm.STATES,
            "state",
        )
        statuses = center.sources.statuses()
        yield _one_of(
            "eventcenter_source_mode",
            "1 for the current mode of each running data source.",
            ["tenant", "source"],
            [([s.tenant, s.name], s.mode) for s in statuses],
            source_modes.STATES,
            "mode",
        )
        paused = GaugeMetricFamily(
            "eventcenter_source_paused",
            "1 while an operator has the data source paused (its engines stopped), else 0.",
            labels=["tenant", "source"],
        )
        for status in statuses:
            paused.add_metric([status.tenant, status.name], 0.0 if status.paused is None else 1.0)
        yield paused
        switches = CounterMetricFamily(
            "eventcenter_source_mode_switches",
            "Mode switches each data source has recorded (kept in its log across restarts).",
            labels=["tenant", "source"],
        )
        for (tenant, source), count in sorted(center.source_switches.switches.items()):
            switches.add_metric([tenant, source], float(count))
        yield switches
        yield _one_of(
            "eventcenter_breaker_state",
            "1 for the current state of each circuit breaker.",
            ["breaker"],
            [([b.name], b.state) for b in center.healing.breakers.states()],
            breaker_states.STATES,
            "state",
        )
        yield from self._source_figures()
        yield GaugeMetricFamily(
            "eventcenter_tuning_busy",
            "1 while a tuning run is in progress.",
            value=1.0 if center.tuning.busy else 0.0,
        )
        yield from self._rca()
        yield from self._store()
        yield from self._projections()

    def _subscriptions(self) -> Iterator[Metric]:
        processor = self._center.processor
        label = ["subscription"]
        queued = GaugeMetricFamily(
            "eventcenter_subscription_deliveries_queued",
            "Deliveries accepted for the subscription and not ended yet (memory and store):"
            " its lag.",
            labels=label,
        )
        in_store = GaugeMetricFamily(
            "eventcenter_subscription_deliveries_in_store",
            "Deliveries of the subscription waiting in the store only (beyond its memory window).",
            labels=label,
        )
        in_flight = GaugeMetricFamily(
            "eventcenter_subscription_deliveries_in_flight",
            "Handler attempts of the subscription running now.",
            labels=label,
        )
        paused = GaugeMetricFamily(
            "eventcenter_subscription_paused", "1 while the subscription is paused.", labels=label
        )
        for info in processor.subscriptions():
            which = [str(info["name"])]
            queued.add_metric(which, float(info["backlog"]))
            in_store.add_metric(which, float(info["backlog"] - info["buffered"]))
            in_flight.add_metric(which, float(info["in_flight"]))
            paused.add_metric(which, 1.0 if info["paused"] else 0.0)
        yield from (queued, in_store, in_flight, paused)
        durations = HistogramMetricFamily(
            "eventcenter_handler_duration_seconds",
            "Durations of handler attempts (failed ones too), by subscription.",
            labels=["subscription"],
        )
        for name, window in sorted(processor.metrics.handlers.items()):
            _histogram(durations, [name], window)
        yield durations
        wait = HistogramMetricFamily(
            "eventcenter_dispatch_wait_seconds",
            "Time from an event's admission to the start of a delivery's first attempt.",
        )
        _histogram(wait, [], processor.metrics.dispatch)
        yield wait
        yield GaugeMetricFamily(
            "eventcenter_oldest_wait_seconds",
            "How long the delivery waiting longest in memory has waited.",
            value=float(processor.queue_depths()["oldest_wait_ms"]) / 1000,
        )

    def _source_figures(self) -> Iterator[Metric]:
        statuses = self._center.sources.statuses()
        health = GaugeMetricFamily(
            "eventcenter_source_health",
            "Health score of each running data source, from 0 to 1.",
            labels=["tenant", "source"],
        )
        items = CounterMetricFamily(
            "eventcenter_source_items",
            "Items each running data source received, by path, since it started.",
            labels=["tenant", "source", "path"],
        )
        for status in statuses:
            health.add_metric([status.tenant, status.name], status.health.score)
            items.add_metric([status.tenant, status.name, "push"], status.health.items_pushed)
            items.add_metric([status.tenant, status.name, "poll"], status.health.items_polled)
        yield health
        yield items

    def _rca(self) -> Iterator[Metric]:
        runner = self._center.healing.runner
        cases = CounterMetricFamily(
            "eventcenter_rca_cases",
            "RCA cases by category and what happened to them, since the process started.",
            labels=["category", "outcome"],
        )
        for (category, outcome), count in sorted(runner.stats.cases.items()):
            cases.add_metric([category, outcome], float(count))
        yield cases
        open_now = GaugeMetricFamily(
            "eventcenter_rca_cases_open", "RCA cases open now, by category.", labels=["category"]
        )
        for category, count in sorted(runner.open_by_category().items()):
            open_now.add_metric([category], float(count))
        yield open_now
        failures = CounterMetricFamily(
            "eventcenter_rca_failures",
            "Failures the RCA analysed, by the category found.",
            labels=["category"],
        )
        for category, count in sorted(runner.stats.by_category.items()):
            failures.add_metric([category], float(count))
        yield failures

    def _store(self) -> Iterator[Metric]:
        writer = self._center.writer
        yield GaugeMetricFamily(
            "eventcenter_store_available",
            "1 while the store answers, 0 during an outage.",
            value=1.0 if writer.available else 0.0,
        )
        yield CounterMetricFamily(
            "eventcenter_store_outages",
            "Times the store became unreachable.",
            value=float(writer.outages),
        )
        errors = CounterMetricFamily(
            "eventcenter_store_errors",
            "Failed writes: unavailable (an attempt that could not reach the store, retried),"
            " refused (a write the store refused).",
            labels=["kind"],
        )
        errors.add_metric(["unavailable"], float(writer.retries))
        errors.add_metric(["refused"], float(writer.refused))
        yield errors
        yield CounterMetricFamily(
            "eventcenter_store_transactions",
            "Transactions the store writer committed.",
            value=float(writer.saves),
        )

    def _projections(self) -> Iterator[Metric]:
        status = self._center.projections.status  # figures kept in memory: no query
        yield GaugeMetricFamily(
            "eventcenter_projection_lag_events",
            "Notifications the read model has still to process (as of its last pass).",
            value=float(status.lag),
        )
        yield GaugeMetricFamily(
            "eventcenter_projection_position",
            "The last notification the read model processed.",
            value=float(status.position),
        )
        yield GaugeMetricFamily(
            "eventcenter_projection_running",
            "1 while the read model's runner runs.",
            value=1.0 if status.running else 0.0,
        )
        yield CounterMetricFamily(
            "eventcenter_projection_errors",
            "Passes of the read model's runner that failed (each retried with back-off).",
            value=float(status.errors),
        )


def _outcomes(label: str, table: Mapping[str, Mapping[str, int]]) -> Iterator[Metric]:
    """One counter family per outcome over one of the snapshot's tables (by type or tenant)."""
    for outcome, meaning in OUTCOMES.items():
        family = CounterMetricFamily(
            f"eventcenter_{label}_events_{outcome}",
            f"{meaning.capitalize()}, by {label}.",
            labels=[label],
        )
        for name, counts in table.items():
            family.add_metric([name], float(counts.get(outcome, 0)))
        yield family


def _one_of(
    name: str,
    documentation: str,
    labels: list[str],
    current: Iterable[tuple[list[str], str]],
    states: Iterable[str],
    state_label: str,
) -> GaugeMetricFamily:
    """A gauge that is 1 for each object's current state and 0 for its other known states.

    A current state missing from ``states`` is shown too (at 1), so a new state is never
    hidden from the scrape.
    """
    known = list(states)
    family = GaugeMetricFamily(name, documentation, labels=[*labels, state_label])
    for values, state in current:
        for candidate in known if state in known else [*known, state]:
            family.add_metric([*values, candidate], 1.0 if candidate == state else 0.0)
    return family


def _histogram(family: HistogramMetricFamily, labels: list[str], window: LatencyWindow) -> None:
    cumulative, total = window.histogram()
    family.add_metric(
        labels,
        [("+Inf" if bound == float("inf") else repr(bound), float(n)) for bound, n in cumulative],
        total,
    )


def center_registry(center: EventCenter) -> CollectorRegistry:
    """A registry of its own holding the collector of ``center`` (not the global default)."""
    registry = CollectorRegistry(auto_describe=False)
    registry.register(CenterCollector(center))
    return registry
