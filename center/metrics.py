"""Prometheus metrics of a center, read at scrape time from what the center already counts.

Nothing here runs on the hot path: :class:`CenterCollector` reads the processor's snapshot
(its bounded counter tables), the subscriptions, the processor state machine, the sources'
modes, the breakers and the tuning workflow only when ``GET /metrics`` is scraped. The
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
  subscription and not ended yet (in memory and in the store).
- ``eventcenter_processor_state{state}``: 1 for the processor's current state (``stable``,
  ``adjusting``, ``load_testing``), 0 for the others.
- ``eventcenter_source_mode{tenant, source, mode}``: 1 for each running source's current mode.
- ``eventcenter_source_mode_switches_total{tenant, source}``: the switches each source's log
  has recorded (the store's figure, restored when the source starts again).
- ``eventcenter_breaker_state{breaker, state}``: 1 for each circuit breaker's current state.
- ``eventcenter_tuning_busy``: 1 while a tuning run is in progress.
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator, Mapping

from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, Metric
from prometheus_client.registry import Collector, CollectorRegistry

from eventcenter.center.app import EventCenter
from eventcenter.domain import breaker as breaker_states
from eventcenter.domain import fsm, source_modes

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

        queued = GaugeMetricFamily(
            "eventcenter_subscription_deliveries_queued",
            "Deliveries accepted for the subscription and not ended yet (memory and store).",
            labels=["subscription"],
        )
        for info in processor.subscriptions():
            queued.add_metric([str(info["name"])], float(info["backlog"]))
        yield queued

        yield _one_of(
            "eventcenter_processor_state",
            "1 for the processor's current state, 0 for the others.",
            [],
            [([], processor.state.state)],
            fsm.STATES,
            "state",
        )
        yield _one_of(
            "eventcenter_source_mode",
            "1 for the current mode of each running data source.",
            ["tenant", "source"],
            [([s.tenant, s.name], s.mode) for s in center.sources.statuses()],
            source_modes.STATES,
            "mode",
        )
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
        yield GaugeMetricFamily(
            "eventcenter_tuning_busy",
            "1 while a tuning run is in progress.",
            value=1.0 if center.tuning.busy else 0.0,
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


def center_registry(center: EventCenter) -> CollectorRegistry:
    """A registry of its own holding the collector of ``center`` (not the global default)."""
    registry = CollectorRegistry(auto_describe=False)
    registry.register(CenterCollector(center))
    return registry
