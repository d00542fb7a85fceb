"""Root-cause analysis as pure code: failures, categories, rules as data, and the analysis.

A :class:`Failure` is what went wrong, where and when (a source's push or poll path, a
reconciliation, a handler, a dispatch, a health check, the store), as plain values. The RCA
runner (``eventcenter.healing.rca``) gathers an :class:`RcaContext` for it through a port (the
source's mode and recent switches, breaker states, the recent error rate, the last deployment)
and calls :func:`analyse` with the rules chosen for the failure's tenant.

Rules are data (:class:`Rule`): a name, a category, the conditions that must all hold
(``when``), conditions that make the diagnosis likelier when they also hold (``support``, each
adding its boost to the base ``confidence``, capped at 1), and the healing strategies the rule
recommends, best first. Each condition says in words what it found (its evidence), so an
analysis explains itself: ``rca show`` prints the category, the confidence and why.

The analysis rule: every rule whose ``when`` conditions all hold is a candidate; the one with
the highest confidence wins; between equal confidences the rule listed first wins. When no rule
matches, the category is ``unknown`` with confidence 0 and no recommended strategy: the runner
escalates such a case to a person at once.

Users add rules of their own (:class:`Condition` takes any predicate over the failure and the
context) and choose per tenant which rules apply (:class:`PerTenant`, used for rules as
:class:`RuleBook` and for healing strategies).

The ports the runner needs are declared here too: :class:`RcaContextPort` (gathers the context),
:class:`HealingStrategy` (applies one healing action and re-checks it) and :class:`Escalator`
(hands a case a person must look at to a sink).
"""

from __future__ import annotations

import math
import re
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from enum import IntEnum, StrEnum
from typing import Any, Generic, Protocol, TypeVar
from uuid import NAMESPACE_URL, UUID, uuid5

from eventcenter.domain.errors import ConfigurationError, InvalidFailure
from eventcenter.domain.sources import SourceError, SourceErrorKind

_NAMESPACE = uuid5(NAMESPACE_URL, "https://eventcenter/rca")

NAME_MAX = 200
KIND_MAX = 64
MESSAGE_MAX = 2_000  # longer messages are cut (the start says what failed)
DETAILS_MAX_DEPTH = 6
_KIND = re.compile(r"^[a-z0-9][a-z0-9_.\-]*$")
_NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.\-]*$")


class Component(StrEnum):
    """Where a failure happened."""

    SOURCE_PUSH = "source_push"
    SOURCE_POLL = "source_poll"
    RECONCILE = "reconcile"
    HANDLER = "handler"
    DISPATCH = "dispatch"
    HEALTH_CHECK = "health_check"
    STORAGE = "storage"


class Severity(IntEnum):
    """How urgent a failure is; the failure queue serves higher severities first."""

    LOW = 1
    MEDIUM = 2
    HIGH = 3
    CRITICAL = 4

    @property
    def label(self) -> str:
        return self.name.lower()

    @classmethod
    def parse(cls, value: Severity | str | int) -> Severity:
        """A severity from its label (``"high"``), its number, or itself."""
        if isinstance(value, Severity):
            return value
        if isinstance(value, str):
            try:
                return cls[value.upper()]
            except KeyError:
                labels = ", ".join(s.label for s in cls)
                reason = f"must be one of {labels}, got {value!r}"
                raise InvalidFailure("severity", reason) from None
        if isinstance(value, int) and not isinstance(value, bool):
            try:
                return cls(value)
            except ValueError:
                pass
        raise InvalidFailure("severity", f"must be a severity label or 1-4, got {value!r}")


class Category(StrEnum):
    """The root-cause categories the built-in rules know. User rules may name their own
    categories (any identifier); learning and cases work per category name."""

    EVENT_TIMEOUT = "event_timeout"
    CONNECTION_FAILURE = "connection_failure"
    AUTH_FAILURE = "auth_failure"
    RATE_LIMITED = "rate_limited"
    POLLING_FAILURE = "polling_failure"
    DATA_INCONSISTENCY = "data_inconsistency"
    STORAGE_FAILURE = "storage_failure"
    HANDLER_BUG = "handler_bug"
    UNKNOWN = "unknown"


#: The severity a source error of each kind gets unless the caller says otherwise: a refused
#: password or a lost position does not go away by waiting; a timeout often does.
SOURCE_SEVERITY = {
    SourceErrorKind.TIMEOUT: Severity.MEDIUM,
    SourceErrorKind.CONNECTION: Severity.HIGH,
    SourceErrorKind.AUTH: Severity.HIGH,
    SourceErrorKind.RATE_LIMITED: Severity.MEDIUM,
    SourceErrorKind.BAD_DATA: Severity.LOW,
    SourceErrorKind.POSITION_LOST: Severity.HIGH,
}


def check_plain(value: Any, where: str = "details", depth: int = 0) -> None:
    """Raise :class:`InvalidFailure` unless ``value`` is a plain JSON value (str, int, float,
    bool, None, lists and string-keyed dicts of those): what an aggregate event can carry."""
    if depth > DETAILS_MAX_DEPTH:
        raise InvalidFailure(where, f"nested deeper than {DETAILS_MAX_DEPTH} levels")
    if value is None or isinstance(value, (str, bool, int)):
        return
    if isinstance(value, float):
        if not math.isfinite(value):
            raise InvalidFailure(where, "numbers must be finite")
        return
    if isinstance(value, (list, tuple)):
        for index, item in enumerate(value):
            check_plain(item, f"{where}[{index}]", depth + 1)
        return
    if isinstance(value, Mapping):
        for key, item in value.items():
            if not isinstance(key, str):
                raise InvalidFailure(where, f"keys must be strings, got {key!r}")
            check_plain(item, f"{where}.{key}", depth + 1)
        return
    raise InvalidFailure(where, f"must hold plain JSON values, got {type(value).__name__}")


def _plain_copy(value: Any) -> Any:
    if isinstance(value, Mapping):
        return {key: _plain_copy(item) for key, item in value.items()}
    if isinstance(value, (list, tuple)):
        return [_plain_copy(item) for item in value]
    return value


def _check_name(field_name: str, value: Any, *, optional: bool = False) -> None:
    if value is None and optional:
        return
    if not isinstance(value, str) or not value.strip():
        raise InvalidFailure(field_name, "must be a non-empty string")
    if len(value) > NAME_MAX:
        raise InvalidFailure(field_name, f"must be at most {NAME_MAX} characters")


@dataclass(frozen=True, slots=True)
class Failure:
    """One failure, as plain values.

    ``at`` is wall-clock time (seconds since the epoch: it outlives the process, like the case
    it ends up in), ``kind`` a short lower-case identifier (a :class:`SourceErrorKind` value for
    source paths, ``exception``, ``timeout``, ``unavailable`` ... elsewhere), ``correlation_id``
    the id of what was being done (an event, a deployment), ``details`` plain JSON values.
    ``message`` is cut to :data:`MESSAGE_MAX` characters. :attr:`id` is derived from the
    values, so the same failure reported twice has one id.
    """

    tenant: str
    source: str | None
    component: Component
    kind: str
    message: str
    at: float
    severity: Severity = Severity.MEDIUM
    correlation_id: str = ""
    details: Mapping[str, Any] = field(default_factory=dict, hash=False)

    def __post_init__(self) -> None:
        _check_name("tenant", self.tenant)
        _check_name("source", self.source, optional=True)
        try:
            component = Component(self.component)
        except ValueError:
            names = ", ".join(c.value for c in Component)
            raise InvalidFailure(
                "component", f"must be one of {names}, got {self.component!r}"
            ) from None
        object.__setattr__(self, "component", component)
        if not isinstance(self.kind, str) or not _KIND.match(self.kind):
            raise InvalidFailure(
                "kind", f"must be a lower-case identifier (a-z, 0-9, _ . -), got {self.kind!r}"
            )
        if len(self.kind) > KIND_MAX:
            raise InvalidFailure("kind", f"must be at most {KIND_MAX} characters")
        if not isinstance(self.message, str):
            raise InvalidFailure("message", "must be a string")
        if len(self.message) > MESSAGE_MAX:
            object.__setattr__(self, "message", self.message[:MESSAGE_MAX])
        if (
            isinstance(self.at, bool)
            or not isinstance(self.at, (int, float))
            or not math.isfinite(self.at)
            or self.at < 0
        ):
            raise InvalidFailure("at", f"must be seconds since the epoch, got {self.at!r}")
        object.__setattr__(self, "at", float(self.at))
        object.__setattr__(self, "severity", Severity.parse(self.severity))
        if not isinstance(self.correlation_id, str) or len(self.correlation_id) > NAME_MAX:
            raise InvalidFailure("correlation_id", f"must be a string of at most {NAME_MAX}")
        if not isinstance(self.details, Mapping):
            raise InvalidFailure("details", "must be a mapping of plain JSON values")
        check_plain(self.details)
        object.__setattr__(self, "details", _plain_copy(self.details))

    @property
    def id(self) -> UUID:
        """Derived from tenant, source, component, kind, time, correlation id and message."""
        text = "\x1f".join(
            (
                self.tenant,
                self.source or "",
                self.component.value,
                self.kind,
                repr(self.at),
                self.correlation_id,
                self.message,
            )
        )
        return uuid5(_NAMESPACE, f"failure/{text}")

    @property
    def key(self) -> tuple[str, str | None]:
        """(tenant, source): whom the failure concerns, for fairness and for matching cases."""
        return (self.tenant, self.source)

    def as_dict(self) -> dict[str, Any]:
        """Plain JSON values, as cases record it (:meth:`from_dict` reads it back)."""
        return {
            "id": str(self.id),
            "tenant": self.tenant,
            "source": self.source,
            "component": self.component.value,
            "kind": self.kind,
            "message": self.message,
            "at": self.at,
            "severity": self.severity.label,
            "correlation_id": self.correlation_id,
            "details": _plain_copy(self.details),
        }

    @classmethod
    def from_dict(cls, values: Mapping[str, Any]) -> Failure:
        return cls(
            tenant=values["tenant"],
            source=values.get("source"),
            component=values["component"],
            kind=values["kind"],
            message=values.get("message", ""),
            at=values["at"],
            severity=Severity.parse(values.get("severity", "medium")),
            correlation_id=values.get("correlation_id", ""),
            details=values.get("details") or {},
        )

    @classmethod
    def from_source_error(
        cls,
        tenant: str,
        source: str,
        component: Component,
        error: SourceError,
        at: float,
        *,
        severity: Severity | None = None,
        correlation_id: str = "",
        details: Mapping[str, Any] | None = None,
    ) -> Failure:
        """A failure of a source's path from the connector's :class:`SourceError` (its kind
        becomes the failure's kind; severity from :data:`SOURCE_SEVERITY` unless given)."""
        extra = dict(details or {})
        if error.retry_after is not None:
            extra.setdefault("retry_after", error.retry_after)
        return cls(
            tenant=tenant,
            source=source,
            component=component,
            kind=error.kind.value,
            message=str(error),
            at=at,
            severity=severity or SOURCE_SEVERITY[error.kind],
            correlation_id=correlation_id,
            details=extra,
        )


# context -----------------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class ModeChange:
    """One recent mode switch of the failure's source (from its source log)."""

    at: float
    previous: str
    to: str
    reason: str = ""


@dataclass(frozen=True, slots=True)
class Deployment:
    """The last deployment the center knows of: its correlation id and when it happened."""

    correlation_id: str
    at: float


@dataclass(frozen=True, slots=True)
class RcaContext:
    """What the runner gathered around a failure, as plain values (recorded with the
    analysis, so ``rca show`` says what the rules saw).

    ``source_mode`` is the source's mode now (None: not a source, or unknown),
    ``recent_switches`` its latest mode switches, oldest first; ``breakers`` maps breaker
    names to their state (``closed``, ``open``, ``half_open``, ``forced_open``, ``disabled``);
    ``error_rate`` the share of failed attempts recently (None: unknown);
    ``last_deployment`` the latest deployment known (None: none).
    """

    at: float
    source_mode: str | None = None
    recent_switches: tuple[ModeChange, ...] = ()
    breakers: Mapping[str, str] = field(default_factory=dict, hash=False)
    error_rate: float | None = None
    last_deployment: Deployment | None = None

    def __post_init__(self) -> None:
        if self.error_rate is not None and not 0.0 <= self.error_rate <= 1.0:
            raise InvalidFailure("context.error_rate", "must be a share between 0 and 1")
        object.__setattr__(self, "breakers", dict(self.breakers))
        object.__setattr__(self, "recent_switches", tuple(self.recent_switches))

    def switches_within(self, seconds: float) -> tuple[ModeChange, ...]:
        """The switches of the last ``seconds`` before :attr:`at`."""
        return tuple(s for s in self.recent_switches if self.at - s.at <= seconds)

    def as_dict(self) -> dict[str, Any]:
        return {
            "at": self.at,
            "source_mode": self.source_mode,
            "recent_switches": [
                {"at": s.at, "previous": s.previous, "to": s.to, "reason": s.reason}
                for s in self.recent_switches
            ],
            "breakers": dict(self.breakers),
            "error_rate": self.error_rate,
            "last_deployment": (
                None
                if self.last_deployment is None
                else {
                    "correlation_id": self.last_deployment.correlation_id,
                    "at": self.last_deployment.at,
                }
            ),
        }

    @classmethod
    def from_dict(cls, values: Mapping[str, Any]) -> RcaContext:
        deployment = values.get("last_deployment")
        return cls(
            at=values["at"],
            source_mode=values.get("source_mode"),
            recent_switches=tuple(ModeChange(**s) for s in values.get("recent_switches", ())),
            breakers=dict(values.get("breakers") or {}),
            error_rate=values.get("error_rate"),
            last_deployment=None if deployment is None else Deployment(**deployment),
        )


# rules -------------------------------------------------------------------------------------------


Predicate = Callable[[Failure, RcaContext], bool]
Detail = Callable[[Failure, RcaContext], str]


@dataclass(frozen=True, slots=True)
class Condition:
    """One thing a rule checks. ``label`` says it in words; ``detail`` (optional) adds the
    values that were seen; the two together are the evidence when the condition holds."""

    label: str
    holds: Predicate
    detail: Detail | None = None

    def evidence(self, failure: Failure, context: RcaContext) -> str | None:
        """The evidence text if the condition holds, else None."""
        if not self.holds(failure, context):
            return None
        if self.detail is None:
            return self.label
        return f"{self.label} ({self.detail(failure, context)})"


def kind_is(*kinds: str) -> Condition:
    """The failure's kind is one of ``kinds``."""
    wanted = frozenset(kinds)
    return Condition(
        f"error kind is {' or '.join(kinds)}",
        lambda f, c: f.kind in wanted,
        lambda f, c: f"{f.kind}: {f.message[:120]}",
    )


def component_is(*components: Component) -> Condition:
    """The failure happened in one of ``components``."""
    wanted = frozenset(components)
    return Condition(
        f"failure in {' or '.join(c.value for c in components)}",
        lambda f, c: f.component in wanted,
    )


def message_mentions(pattern: str) -> Condition:
    """The failure's message matches the regular expression ``pattern`` (case-insensitive)."""
    compiled = re.compile(pattern, re.IGNORECASE)

    def found(f: Failure, c: RcaContext) -> str:
        match = compiled.search(f.message)
        return repr(match.group(0)) if match else ""

    return Condition(
        f"message mentions /{pattern}/", lambda f, c: bool(compiled.search(f.message)), found
    )


def mode_is(*modes: str) -> Condition:
    """The source is in one of ``modes`` now."""
    wanted = frozenset(modes)
    return Condition(
        f"source mode is {' or '.join(modes)}",
        lambda f, c: c.source_mode in wanted,
        lambda f, c: f"now {c.source_mode}",
    )


def switched_within(seconds: float, at_least: int = 1) -> Condition:
    """The source switched mode at least ``at_least`` times in the last ``seconds``."""

    def detail(f: Failure, c: RcaContext) -> str:
        shown = ", ".join(f"{s.previous}->{s.to}" for s in c.switches_within(seconds)[-3:])
        return f"{len(c.switches_within(seconds))} switch(es): {shown}"

    return Condition(
        f"source switched mode {at_least}+ time(s) in the last {seconds:g}s",
        lambda f, c: len(c.switches_within(seconds)) >= at_least,
        detail,
    )


def error_rate_above(share: float) -> Condition:
    """The recent error rate is above ``share``."""
    return Condition(
        f"recent error rate above {share:.0%}",
        lambda f, c: c.error_rate is not None and c.error_rate > share,
        lambda f, c: f"{(c.error_rate or 0.0):.0%}",
    )


def breaker_open(name: str | None = None) -> Condition:
    """A circuit breaker is open: the one named ``name``, else one named after the failure's
    source (``tenant/source``) or any breaker at all when the failure has no source."""

    def open_ones(f: Failure, c: RcaContext) -> list[str]:
        opened = [n for n, state in c.breakers.items() if state in ("open", "forced_open")]
        if name is not None:
            return [n for n in opened if n == name]
        if f.source is not None:
            own = {f"{f.tenant}/{f.source}", f.source}
            return [n for n in opened if n in own]
        return opened

    return Condition(
        f"circuit breaker {name or 'of the source'} is open",
        lambda f, c: bool(open_ones(f, c)),
        lambda f, c: ", ".join(open_ones(f, c)),
    )


def deployed_within(seconds: float) -> Condition:
    """The last deployment happened at most ``seconds`` before the failure (or the failure
    carries the deployment's correlation id)."""

    def holds(f: Failure, c: RcaContext) -> bool:
        deployed = c.last_deployment
        if deployed is None:
            return False
        if f.correlation_id and f.correlation_id == deployed.correlation_id:
            return True
        return 0.0 <= f.at - deployed.at <= seconds

    def detail(f: Failure, c: RcaContext) -> str:
        deployed = c.last_deployment
        assert deployed is not None
        return f"deployment {deployed.correlation_id} {f.at - deployed.at:.0f}s before"

    return Condition(f"deployed within {seconds:g}s before the failure", holds, detail)


@dataclass(frozen=True, slots=True)
class Rule:
    """A diagnosis as data; see the module docstring for how rules are weighed.

    ``strategies`` are names of healing strategies, best first (the learning rule breaks ties
    between equally successful strategies in this order); empty: escalate at once.
    """

    name: str
    category: str
    when: tuple[Condition, ...]
    confidence: float
    strategies: tuple[str, ...] = ()
    support: tuple[tuple[Condition, float], ...] = ()

    def __post_init__(self) -> None:
        if not isinstance(self.name, str) or not _NAME.match(self.name):
            raise ConfigurationError(f"a rule name must be an identifier, got {self.name!r}")
        if not isinstance(self.category, str) or not _KIND.match(self.category):
            raise ConfigurationError(
                f"rule {self.name}: category must be a lower-case identifier, got {self.category!r}"
            )
        if not self.when:
            raise ConfigurationError(
                f"rule {self.name}: give at least one condition in 'when' (a rule matching"
                " every failure would hide the others)"
            )
        if not 0.0 < self.confidence <= 1.0:
            raise ConfigurationError(
                f"rule {self.name}: confidence must be in (0, 1], got {self.confidence}"
            )
        for condition, boost in self.support:
            if not 0.0 <= boost <= 1.0:
                raise ConfigurationError(
                    f"rule {self.name}: the boost of '{condition.label}' must be in [0, 1]"
                )
        object.__setattr__(self, "category", str(self.category))
        object.__setattr__(self, "when", tuple(self.when))
        object.__setattr__(self, "strategies", tuple(self.strategies))
        object.__setattr__(self, "support", tuple(self.support))

    def match(self, failure: Failure, context: RcaContext) -> tuple[float, tuple[str, ...]] | None:
        """(confidence, evidence) if every ``when`` condition holds, else None."""
        evidence: list[str] = []
        for condition in self.when:
            found = condition.evidence(failure, context)
            if found is None:
                return None
            evidence.append(found)
        confidence = self.confidence
        for condition, boost in self.support:
            found = condition.evidence(failure, context)
            if found is not None:
                evidence.append(found)
                confidence += boost
        return min(1.0, round(confidence, 6)), tuple(evidence)


@dataclass(frozen=True, slots=True)
class Analysis:
    """The outcome of :func:`analyse`: the winning rule's category, confidence, evidence and
    recommended strategies, and the other rules that matched (name, category, confidence)."""

    category: str
    confidence: float
    evidence: tuple[str, ...]
    strategies: tuple[str, ...]
    rule: str | None
    others: tuple[tuple[str, str, float], ...] = ()

    def as_dict(self) -> dict[str, Any]:
        return {
            "category": self.category,
            "confidence": self.confidence,
            "evidence": list(self.evidence),
            "strategies": list(self.strategies),
            "rule": self.rule,
            "others": [list(other) for other in self.others],
        }

    @classmethod
    def from_dict(cls, values: Mapping[str, Any]) -> Analysis:
        return cls(
            category=values["category"],
            confidence=float(values["confidence"]),
            evidence=tuple(values.get("evidence", ())),
            strategies=tuple(values.get("strategies", ())),
            rule=values.get("rule"),
            others=tuple(
                (str(name), str(category), float(confidence))
                for name, category, confidence in values.get("others", ())
            ),
        )


UNKNOWN_EVIDENCE = "no rule matched this failure"


def analyse(failure: Failure, context: RcaContext, rules: Iterable[Rule]) -> Analysis:
    """Weigh ``rules`` against the failure; see the module docstring for the rule."""
    matched: list[tuple[float, int, Rule, tuple[str, ...]]] = []
    for order, rule in enumerate(rules):
        found = rule.match(failure, context)
        if found is not None:
            matched.append((found[0], order, rule, found[1]))
    if not matched:
        return Analysis(Category.UNKNOWN.value, 0.0, (UNKNOWN_EVIDENCE,), (), None)
    matched.sort(key=lambda m: (-m[0], m[1]))
    confidence, _, winner, evidence = matched[0]
    others = tuple((r.name, r.category, c) for c, _, r, _ in matched[1:])
    return Analysis(winner.category, confidence, evidence, winner.strategies, winner.name, others)


# built-in strategy names (the strategies themselves live in eventcenter.healing) ----------------

RESTART_STREAM = "restart_stream"
RECONNECT = "reconnect"
FORCE_POLLING = "force_polling"
RERUN_RECONCILIATION = "rerun_reconciliation"
REDUCE_FREQUENCY = "reduce_frequency"
CLEAR_CACHE = "clear_cache"
RELOAD_CONFIG = "reload_config"
RECOVER_SERVICE = "recover_service"

SOURCE_PATHS = (Component.SOURCE_PUSH, Component.SOURCE_POLL, Component.RECONCILE)
PUSH, POLL = Component.SOURCE_PUSH, Component.SOURCE_POLL

#: The built-in rules, in the order that breaks ties between equal confidences.
DEFAULT_RULES: tuple[Rule, ...] = (
    Rule(
        "push_path_timeout",
        Category.EVENT_TIMEOUT,
        when=(component_is(PUSH), kind_is("timeout")),
        confidence=0.8,
        strategies=(RESTART_STREAM, RECONNECT, FORCE_POLLING),
        support=((mode_is("hybrid", "polling_only"), 0.1), (switched_within(600.0), 0.05)),
    ),
    Rule(
        "connection_refused",
        Category.CONNECTION_FAILURE,
        when=(kind_is("connection"),),
        confidence=0.85,
        strategies=(RECONNECT, FORCE_POLLING),
        support=((breaker_open(), 0.1),),
    ),
    Rule(
        "health_check_timeout",
        Category.CONNECTION_FAILURE,
        when=(component_is(Component.HEALTH_CHECK), kind_is("timeout", "unavailable")),
        confidence=0.6,
        strategies=(RECOVER_SERVICE,),
    ),
    Rule(
        "credentials_refused",
        Category.AUTH_FAILURE,
        when=(kind_is("auth"),),
        confidence=0.95,
        strategies=(RELOAD_CONFIG,),
    ),
    Rule(
        "rate_limited",
        Category.RATE_LIMITED,
        when=(kind_is("rate_limited"),),
        confidence=0.9,
        strategies=(REDUCE_FREQUENCY,),
    ),
    Rule(
        "poll_path_failing",
        Category.POLLING_FAILURE,
        when=(component_is(POLL),),
        confidence=0.7,
        strategies=(RECONNECT, REDUCE_FREQUENCY),
        support=((error_rate_above(0.5), 0.1),),
    ),
    Rule(
        "bad_or_lost_data",
        Category.DATA_INCONSISTENCY,
        when=(kind_is("bad_data", "position_lost"),),
        confidence=0.8,
        strategies=(RERUN_RECONCILIATION, CLEAR_CACHE),
    ),
    Rule(
        "reconciliation_failing",
        Category.DATA_INCONSISTENCY,
        when=(component_is(Component.RECONCILE),),
        confidence=0.65,
        strategies=(RERUN_RECONCILIATION,),
    ),
    Rule(
        "store_failing",
        Category.STORAGE_FAILURE,
        when=(component_is(Component.STORAGE),),
        confidence=0.9,
    ),
    Rule(
        "handler_raised",
        Category.HANDLER_BUG,
        when=(component_is(Component.HANDLER), kind_is("exception", "bad_data")),
        confidence=0.7,
        strategies=(CLEAR_CACHE,),
        support=((deployed_within(3600.0), 0.2),),
    ),
)


# per-tenant selection ----------------------------------------------------------------------------


class Named(Protocol):
    @property
    def name(self) -> str: ...


N = TypeVar("N", bound=Named)


class PerTenant(Generic[N]):
    """Named things (rules, healing strategies) registered once, and which of them apply to
    each tenant: the default selection (everything registered with ``default=True``) unless a
    tenant was given its own with :meth:`choose`. Order is registration order (it breaks ties).
    """

    def __init__(self, what: str, items: Iterable[N] = ()) -> None:
        self._what = what
        self._items: dict[str, N] = {}
        self._default: list[str] = []
        self._tenants: dict[str, tuple[str, ...]] = {}
        for item in items:
            self.register(item)

    def register(self, item: N, *, default: bool = True) -> None:
        """Add ``item``; raise ConfigurationError if one of that name exists already."""
        if item.name in self._items:
            raise ConfigurationError(f"a {self._what} named '{item.name}' is registered already")
        self._items[item.name] = item
        if default:
            self._default.append(item.name)

    def choose(self, tenant: str, names: Sequence[str]) -> None:
        """From now on only ``names`` (in that order) apply to ``tenant``."""
        unknown = [name for name in names if name not in self._items]
        if unknown:
            known = ", ".join(self._items) or "none"
            raise ConfigurationError(
                f"no {self._what} named {', '.join(map(repr, unknown))} (registered: {known})"
            )
        self._tenants[tenant] = tuple(names)

    def for_tenant(self, tenant: str) -> tuple[N, ...]:
        names = self._tenants.get(tenant, self._default)
        return tuple(self._items[name] for name in names)

    def get(self, name: str) -> N | None:
        return self._items.get(name)

    def names(self) -> tuple[str, ...]:
        return tuple(self._items)


class RuleBook(PerTenant[Rule]):
    """The rules of a center: :data:`DEFAULT_RULES` unless told otherwise, plus the users'."""

    def __init__(self, rules: Iterable[Rule] = DEFAULT_RULES) -> None:
        super().__init__("rule", rules)


# the case as strategies and sinks see it --------------------------------------------------------


@dataclass(frozen=True, slots=True)
class CaseSummary:
    """An RCA case as healing strategies and escalation sinks see it: plain values, read only.

    ``key`` is stable for one notification of one case (case id and notification number): a
    sink that may be called twice for the same notification (a crash between sending and
    recording) can drop the repeat by it. ``escalated_at`` is when the case first escalated
    (None: not yet); a reminder carries it unchanged.
    """

    case_id: str
    tenant: str
    source: str | None
    category: str
    status: str
    confidence: float
    evidence: tuple[str, ...]
    strategies: tuple[str, ...]
    opened_at: float
    failures: int
    first_failure: Mapping[str, Any]
    last_failure: Mapping[str, Any]
    correlation_id: str
    attempts: tuple[Mapping[str, Any], ...] = ()
    reason: str = ""
    notification: int = 0
    escalated_at: float | None = None

    @property
    def key(self) -> str:
        return f"{self.case_id}/{self.notification}"

    def as_dict(self) -> dict[str, Any]:
        return {
            "case_id": self.case_id,
            "key": self.key,
            "tenant": self.tenant,
            "source": self.source,
            "category": self.category,
            "status": self.status,
            "confidence": self.confidence,
            "evidence": list(self.evidence),
            "strategies": list(self.strategies),
            "opened_at": self.opened_at,
            "failures": self.failures,
            "first_failure": _plain_copy(self.first_failure),
            "last_failure": _plain_copy(self.last_failure),
            "correlation_id": self.correlation_id,
            "attempts": [_plain_copy(a) for a in self.attempts],
            "reason": self.reason,
            "notification": self.notification,
            "escalated_at": self.escalated_at,
        }


# ports -------------------------------------------------------------------------------------------


class RcaContextPort(Protocol):
    """Gathers the context of a failure (the center wires it to the source manager, the
    breakers, the error counters and the deployment marker). Returns plain values only."""

    async def gather(self, failure: Failure) -> RcaContext: ...


class HealingStrategy(Protocol):
    """One healing action, registered like a handler.

    ``categories``: the categories it may heal; ``max_attempts``: how many times it may be tried
    in one case; ``cooldown``: seconds before it may be applied again to the same tenant and
    source (in this case or the next one: no thrashing). ``apply`` does the action and says in
    words what it did; ``verify`` is the re-check: True only when the problem is gone (the push
    path delivering again, the health check green). The runner bounds ``verify`` by its verify
    timeout; an attempt counts as a success only if it returns True in time.

    A strategy may also define ``applies_to(case) -> bool`` (not part of the protocol, so a
    plain pair of functions stays a strategy): the runner then offers it only the cases it can
    act on (a source strategy, cases of a data source; a service recovery, health checks).
    """

    @property
    def name(self) -> str: ...

    @property
    def categories(self) -> frozenset[str]: ...

    @property
    def max_attempts(self) -> int: ...

    @property
    def cooldown(self) -> float: ...

    async def apply(self, case: CaseSummary) -> str: ...

    async def verify(self, case: CaseSummary) -> bool: ...


class Escalator(Protocol):
    """Hands a case a person must look at to a sink (webhook, log, callback); returns the
    name of the sink that took it. Raises :class:`~eventcenter.domain.errors.EventCenterError`
    when no sink took it (the runner retries later)."""

    async def escalate(self, case: CaseSummary) -> str: ...
