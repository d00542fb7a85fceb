"""Failures, contexts, the built-in rules one by one, how rules are weighed, and rule books per
tenant."""

from __future__ import annotations

from typing import Any

import pytest

from eventcenter.domain.errors import ConfigurationError, InvalidFailure
from eventcenter.domain.rca import (
    DEFAULT_RULES,
    MESSAGE_MAX,
    UNKNOWN_EVIDENCE,
    Analysis,
    Category,
    Component,
    Condition,
    Deployment,
    Failure,
    ModeChange,
    RcaContext,
    Rule,
    RuleBook,
    Severity,
    analyse,
    breaker_open,
    kind_is,
    message_mentions,
)
from eventcenter.domain.sources import SourceError, SourceErrorKind

AT = 1_700_000_000.0


def failure(
    component: Component = Component.SOURCE_PUSH,
    kind: str = "timeout",
    *,
    tenant: str = "acme",
    source: str | None = "orders",
    message: str = "no message for 30s",
    at: float = AT,
    correlation_id: str = "",
    **details: Any,
) -> Failure:
    return Failure(
        tenant=tenant,
        source=source,
        component=component,
        kind=kind,
        message=message,
        at=at,
        correlation_id=correlation_id,
        details=details,
    )


def context(**values: Any) -> RcaContext:
    return RcaContext(at=AT, **values)


# failures ----------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("changes", "field"),
    [
        ({"tenant": ""}, "tenant"),
        ({"source": ""}, "source"),
        ({"component": "kitchen"}, "component"),
        ({"kind": "Time Out"}, "kind"),
        ({"kind": ""}, "kind"),
        ({"at": -1.0}, "at"),
        ({"at": float("nan")}, "at"),
        ({"severity": "urgent"}, "severity"),
        ({"severity": 9}, "severity"),
        ({"details": {"when": object()}}, "details.when"),
        ({"details": {"n": [1, float("inf")]}}, "details.n[1]"),
        ({"details": {1: "x"}}, "details"),
    ],
)
def test_a_failure_names_the_field_it_refuses(changes: dict[str, Any], field: str) -> None:
    values: dict[str, Any] = {
        "tenant": "acme",
        "source": "orders",
        "component": "source_push",
        "kind": "timeout",
        "message": "m",
        "at": AT,
    }
    with pytest.raises(InvalidFailure) as refused:
        Failure(**(values | changes))
    assert refused.value.field == field


def test_a_failure_keeps_plain_values_and_cuts_a_long_message() -> None:
    made = Failure(
        "acme",
        None,
        "handler",  # type: ignore[arg-type]
        "exception",
        "x" * (MESSAGE_MAX + 50),
        AT,
        severity="high",  # type: ignore[arg-type]
        details={"attempts": 3, "path": ("a", "b")},
    )
    assert made.component is Component.HANDLER
    assert made.severity is Severity.HIGH
    assert len(made.message) == MESSAGE_MAX
    assert made.details == {"attempts": 3, "path": ["a", "b"]}
    assert Failure.from_dict(made.as_dict()) == made


def test_the_failure_id_is_derived_from_what_happened() -> None:
    assert failure().id == failure().id
    assert failure().id != failure(at=AT + 1).id
    assert failure().id != failure(source="other").id
    assert failure().id != failure(correlation_id="deploy-7").id


def test_a_source_error_becomes_a_failure_of_its_kind_and_severity() -> None:
    error = SourceError(SourceErrorKind.RATE_LIMITED, "HTTP 429 from poll", retry_after=12.0)
    made = Failure.from_source_error("acme", "orders", Component.SOURCE_POLL, error, AT)
    assert (made.kind, made.severity, made.message) == (
        "rate_limited",
        Severity.MEDIUM,
        "rate_limited: HTTP 429 from poll",
    )
    assert made.details == {"retry_after": 12.0}
    auth = SourceError(SourceErrorKind.AUTH, "password refused")
    assert Failure.from_source_error("a", "s", Component.SOURCE_PUSH, auth, AT).severity is (
        Severity.HIGH
    )


def test_the_context_round_trips_as_plain_values() -> None:
    made = context(
        source_mode="hybrid",
        recent_switches=(ModeChange(AT - 5, "event_only", "hybrid", "3 push failures"),),
        breakers={"acme/orders": "open"},
        error_rate=0.4,
        last_deployment=Deployment("deploy-7", AT - 60),
    )
    assert RcaContext.from_dict(made.as_dict()) == made
    with pytest.raises(InvalidFailure):
        context(error_rate=1.5)


# each built-in rule ------------------------------------------------------------------------------

PUSH, POLL = Component.SOURCE_PUSH, Component.SOURCE_POLL

RULE_CASES = [
    # (failure, context, category, rule, confidence, evidence fragment)
    (failure(PUSH, "timeout"), context(), Category.EVENT_TIMEOUT, "push_path_timeout", 0.8, ""),
    (
        failure(PUSH, "timeout"),
        context(
            source_mode="hybrid",
            recent_switches=(ModeChange(AT - 30, "event_only", "hybrid"),),
        ),
        Category.EVENT_TIMEOUT,
        "push_path_timeout",
        0.95,
        "source mode is hybrid or polling_only (now hybrid)",
    ),
    (
        failure(PUSH, "connection"),
        context(),
        Category.CONNECTION_FAILURE,
        "connection_refused",
        0.85,
        "error kind is connection",
    ),
    (
        failure(POLL, "connection"),
        context(breakers={"acme/orders": "open", "billing": "open"}),
        Category.CONNECTION_FAILURE,
        "connection_refused",
        0.95,
        "circuit breaker of the source is open (acme/orders)",
    ),
    (
        failure(Component.HEALTH_CHECK, "timeout", source=None),
        context(),
        Category.CONNECTION_FAILURE,
        "health_check_timeout",
        0.6,
        "failure in health_check",
    ),
    (failure(PUSH, "auth"), context(), Category.AUTH_FAILURE, "credentials_refused", 0.95, ""),
    (failure(POLL, "rate_limited"), context(), Category.RATE_LIMITED, "rate_limited", 0.9, ""),
    (failure(POLL, "timeout"), context(), Category.POLLING_FAILURE, "poll_path_failing", 0.7, ""),
    (
        failure(POLL, "timeout"),
        context(error_rate=0.8),
        Category.POLLING_FAILURE,
        "poll_path_failing",
        0.8,
        "recent error rate above 50% (80%)",
    ),
    (
        failure(PUSH, "position_lost"),
        context(),
        Category.DATA_INCONSISTENCY,
        "bad_or_lost_data",
        0.8,
        "",
    ),
    (
        failure(Component.RECONCILE, "exception"),
        context(),
        Category.DATA_INCONSISTENCY,
        "reconciliation_failing",
        0.65,
        "",
    ),
    (
        failure(Component.STORAGE, "unavailable", source=None),
        context(),
        Category.STORAGE_FAILURE,
        "store_failing",
        0.9,
        "",
    ),
    (
        failure(Component.HANDLER, "exception", source=None),
        context(),
        Category.HANDLER_BUG,
        "handler_raised",
        0.7,
        "",
    ),
    (
        failure(Component.HANDLER, "exception", source=None, at=AT),
        context(last_deployment=Deployment("deploy-7", AT - 120)),
        Category.HANDLER_BUG,
        "handler_raised",
        0.9,
        "deployment deploy-7 120s before",
    ),
]


@pytest.mark.parametrize(
    ("made", "seen", "category", "rule", "confidence", "evidence"),
    RULE_CASES,
    ids=[f"{case[3]}-{i}" for i, case in enumerate(RULE_CASES)],
)
def test_each_built_in_rule(
    made: Failure,
    seen: RcaContext,
    category: str,
    rule: str,
    confidence: float,
    evidence: str,
) -> None:
    analysis = analyse(made, seen, DEFAULT_RULES)
    assert (analysis.category, analysis.rule) == (category, rule)
    assert analysis.confidence == pytest.approx(confidence)
    assert analysis.evidence, "an analysis says why"
    if evidence:
        assert any(evidence in line for line in analysis.evidence), analysis.evidence
    assert analysis.strategies == next(r for r in DEFAULT_RULES if r.name == rule).strategies


def test_a_deployment_correlation_id_counts_however_long_ago() -> None:
    made = failure(Component.HANDLER, "exception", source=None, correlation_id="deploy-7")
    seen = context(last_deployment=Deployment("deploy-7", AT - 86_400))
    assert analyse(made, seen, DEFAULT_RULES).confidence == pytest.approx(0.9)


def test_a_failure_no_rule_knows_is_unknown_with_no_strategy() -> None:
    analysis = analyse(failure(Component.DISPATCH, "exception"), context(), DEFAULT_RULES)
    assert analysis == Analysis(Category.UNKNOWN, 0.0, (UNKNOWN_EVIDENCE,), (), None)


# weighing rules ----------------------------------------------------------------------------------


def always(label: str) -> Condition:
    return Condition(label, lambda f, c: True)


def test_the_most_confident_rule_wins_and_the_others_are_listed() -> None:
    rules = (
        Rule("low", "slow_disk", when=(always("a"),), confidence=0.3),
        Rule("high", "full_disk", when=(always("b"),), confidence=0.6, strategies=("free",)),
        Rule("never", "other", when=(Condition("no", lambda f, c: False),), confidence=1.0),
    )
    analysis = analyse(failure(), context(), rules)
    assert (analysis.category, analysis.rule, analysis.strategies) == (
        "full_disk",
        "high",
        ("free",),
    )
    assert analysis.others == (("low", "slow_disk", 0.3),)


def test_between_equal_confidences_the_rule_listed_first_wins() -> None:
    first = Rule("first", "a", when=(always("x"),), confidence=0.5)
    second = Rule("second", "b", when=(always("y"),), confidence=0.5)
    assert analyse(failure(), context(), (first, second)).rule == "first"
    assert analyse(failure(), context(), (second, first)).rule == "second"


def test_support_adds_its_boost_capped_at_one() -> None:
    rule = Rule(
        "r",
        "c",
        when=(always("base"),),
        confidence=0.9,
        support=((always("one"), 0.2), (Condition("no", lambda f, c: False), 0.5)),
    )
    analysis = analyse(failure(), context(), (rule,))
    assert analysis.confidence == 1.0
    assert analysis.evidence == ("base", "one")


def test_a_message_condition_quotes_what_it_found() -> None:
    rule = Rule("quota", "quota_exceeded", when=(message_mentions(r"quota \w+"),), confidence=0.5)
    analysis = analyse(failure(message="daily quota exceeded"), context(), (rule,))
    assert analysis.evidence == ("message mentions /quota \\w+/ ('quota exceeded')",)


def test_a_named_breaker_condition_looks_at_that_breaker_only() -> None:
    condition = breaker_open("payments")
    assert condition.evidence(failure(), context(breakers={"payments": "forced_open"})) is not None
    assert condition.evidence(failure(), context(breakers={"payments": "half_open"})) is None


@pytest.mark.parametrize(
    ("values", "problem"),
    [
        ({"name": "has space"}, "identifier"),
        ({"category": "Bad Category"}, "lower-case"),
        ({"when": ()}, "at least one condition"),
        ({"confidence": 0.0}, "confidence"),
        ({"confidence": 1.5}, "confidence"),
        ({"support": ((kind_is("x"), 2.0),)}, "boost"),
    ],
)
def test_a_rule_says_what_is_wrong_with_it(values: dict[str, Any], problem: str) -> None:
    made: dict[str, Any] = {
        "name": "r",
        "category": "c",
        "when": (kind_is("timeout"),),
        "confidence": 0.5,
    }
    with pytest.raises(ConfigurationError, match=problem):
        Rule(**(made | values))


def test_categories_are_recorded_as_plain_strings() -> None:
    rule = Rule("r", Category.RATE_LIMITED, when=(always("x"),), confidence=0.5)
    assert type(rule.category) is str
    assert type(analyse(failure(), context(), (rule,)).category) is str


# rule books per tenant ---------------------------------------------------------------------------


def test_a_tenant_uses_the_default_rules_unless_it_chose_its_own() -> None:
    book = RuleBook()
    quota = Rule("quota", "quota_exceeded", when=(message_mentions("quota"),), confidence=0.99)
    book.register(quota, default=False)
    book.choose("beta", ["quota", "push_path_timeout"])

    made = failure(message="quota reached while waiting")
    assert analyse(made, context(), book.for_tenant("acme")).rule == "push_path_timeout"
    assert [r.name for r in book.for_tenant("beta")] == ["quota", "push_path_timeout"]
    assert analyse(made, context(), book.for_tenant("beta")).category == "quota_exceeded"
    assert book.for_tenant("acme") == DEFAULT_RULES


def test_a_rule_book_refuses_unknown_and_duplicate_names() -> None:
    book = RuleBook()
    with pytest.raises(ConfigurationError, match="no rule named 'nope'"):
        book.choose("acme", ["nope"])
    with pytest.raises(ConfigurationError, match="registered already"):
        book.register(DEFAULT_RULES[0])
