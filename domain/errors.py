"""The one error tree of eventcenter.

    EventCenterError
    ├── InvalidEvent            an envelope or payload failed validation (names the field)
    │   └── InvalidBatch        one event of a batch failed (names its index and field)
    ├── InvalidPattern          a subscription pattern is not a valid dot pattern
    ├── TransitionRefused       the processor state machine refused a trigger
    ├── SourceModeRefused       a source's mode machine (or its log) refused a move
    ├── InvalidPauseRequest     a request to pause or resume a data source failed validation
    ├── BreakerRefused          a circuit breaker (or its log) refused a move
    ├── CallNotPermitted        a circuit breaker refused a call (open, forced open, no permit)
    ├── CallTimedOut            a call through a circuit breaker ran past its timeout
    ├── SubscriptionError       unknown or duplicate subscription
    ├── Backpressure            the processor queue stayed full for longer than allowed
    ├── ProcessorClosed         publishing to a processor that is stopped or not running
    ├── RecordingFailed         a decision could not be made durable
    ├── DeadLetterNotFound      no dead letter with that id
    ├── ShutdownInterrupted     the reason on events still queued when the processor stopped
    ├── ConfigurationError      a config file missing or malformed, settings that clash
    ├── StoreUnavailable        the database cannot be reached or used (URL without password)
    │   └── StoreNotFound       a read-only command found no store where it was told to look
    ├── CenterLocked            another process is the active center of that name on that store
    ├── ApiKeyRefused           an API key cannot be created or revoked as asked
    ├── LeaseLost               this process is no longer the active center (fenced off)
    ├── ReplayRefused           a dead letter is not pending (being replayed, or replayed)
    ├── HandlerTimeout          the reason on a handler attempt that ran past its timeout
    ├── PermanentFailure        raised by a handler: do not retry, dead-letter at once
    ├── InvalidNotice           an escalation notice holds, or a body gives, values it cannot
    ├── InvalidAnswer           a person's answer to an escalated case failed validation
    ├── SignatureInvalid        a signed webhook body: header missing, stale, or not matching
    ├── InvalidFailure          a failure reported for RCA failed validation (names the field)
    ├── RcaCaseRefused          an RCA case refused a step that does not follow from its state
    ├── RcaCaseNotFound         no RCA case with that id
    ├── UnknownService          no health check, recovery or degradation registered by that name
    ├── RecoveryRefused         a service's recovery log refused a step that does not follow
    ├── StrategyDeclined        a degradation strategy cannot answer this call (the next is tried)
    ├── InvalidCurve            a load test's measured curve or step failed validation
    ├── ThroughputRefused       a throughput record refused a measurement, flag or regression
    ├── TuningRefused           the adjustment coordinator cannot tune a service (yet)
    ├── TargetUnreachable       a load test's target did not answer before the test began
    ├── LoadTestFailed          the load generator failed, or ran past its hard time limit
    ├── DispatchRefused         a frequency could not be dispatched (bad agent URL, no agents)
    └── ServiceUnavailable      a degraded call: the service failed and no strategy answered

Each class says when it is raised; callers catch only what they can act on.
"""

from __future__ import annotations

from collections.abc import Iterator


class EventCenterError(Exception):
    """Root of every error eventcenter raises on purpose."""


class InvalidEvent(EventCenterError, ValueError):
    """Raised when an event envelope (or a handler's payload) fails validation.

    ``field`` is the dotted path of the first offending field, ``reason`` what is wrong with it.
    """

    def __init__(self, field: str, reason: str) -> None:
        self.field = field
        self.reason = reason
        super().__init__(f"invalid event: field '{field}': {reason}")


class InvalidBatch(InvalidEvent):
    """Raised by ``publish_batch`` when one event is invalid; nothing of the batch is accepted."""

    def __init__(self, index: int, field: str, reason: str) -> None:
        self.index = index
        super().__init__(field, reason)
        self.args = (f"invalid batch: event #{index}: field '{field}': {reason}",)


class InvalidPattern(EventCenterError, ValueError):
    """Raised when a subscription pattern is empty or has an invalid segment."""


class TransitionRefused(EventCenterError):
    """Raised when the processor state machine refuses a trigger.

    ``trigger`` and ``state`` say what was asked and where the machine was; the message says why.
    """

    def __init__(self, trigger: str, state: str, reason: str) -> None:
        self.trigger = trigger
        self.state = state
        self.reason = reason
        super().__init__(f"'{trigger}' refused in state '{state}': {reason}")


class SourceModeRefused(EventCenterError):
    """Raised when a data source's mode machine refuses a trigger, or its log refuses to record
    a move that does not start from the mode it holds.

    ``source`` names the source (``tenant/name``, may be empty), ``trigger`` what was asked,
    ``mode`` where the source was; the message says why and what is allowed instead.
    """

    def __init__(self, source: str, trigger: str, mode: str, reason: str) -> None:
        self.source = source
        self.trigger = trigger
        self.mode = mode
        self.reason = reason
        named = f"source '{source}': " if source else ""
        super().__init__(f"{named}'{trigger}' refused in mode '{mode}': {reason}")


class InvalidPauseRequest(EventCenterError, ValueError):
    """Raised when a request to pause or resume a data source fails validation: an unknown
    action or field, no one named as ``by``, a pause without a reason, a text too long.
    ``field`` names the first offending field; the message lists every problem."""

    def __init__(self, problems: list[tuple[str, str]]) -> None:
        self.problems = problems
        self.field, self.reason = problems[0]
        listed = "; ".join(f"field '{field}': {reason}" for field, reason in problems)
        super().__init__(f"invalid pause request: {listed}")


class BreakerRefused(EventCenterError):
    """Raised when a circuit breaker's state table has no such move from where it is (a
    ``close`` while closed), or its log refuses to record a move that does not start from the
    state it holds.

    ``breaker`` names the breaker, ``trigger`` what was asked, ``state`` where it was.
    """

    def __init__(self, breaker: str, trigger: str, state: str, reason: str) -> None:
        self.breaker = breaker
        self.trigger = trigger
        self.state = state
        self.reason = reason
        super().__init__(f"breaker '{breaker}': '{trigger}' refused in state '{state}': {reason}")


class CallNotPermitted(EventCenterError):
    """Raised by a circuit breaker without a fallback when it lets no call through: it is open
    (``retry_in`` seconds are left of its wait), forced open by an operator, or half-open with
    every trial call already given out. The call was not made: retrying at once is pointless.
    """

    def __init__(self, breaker: str, state: str, retry_in: float | None = None) -> None:
        self.breaker = breaker
        self.state = state
        self.retry_in = retry_in
        if retry_in is not None:
            why = f"it is {state}; calls are tried again in {retry_in:.1f}s"
        elif state == "forced_open":
            why = "it was forced open; reset it to let calls through"
        else:
            why = f"it is {state} and every trial call is taken; try again shortly"
        super().__init__(f"breaker '{breaker}' did not permit the call: {why}")


class CallTimedOut(EventCenterError, TimeoutError):
    """Raised when a call through a circuit breaker ran longer than the breaker's ``timeout``.
    The call was cancelled and counts as a failure of the protected dependency."""

    def __init__(self, breaker: str, timeout: float) -> None:
        self.breaker = breaker
        self.timeout = timeout
        super().__init__(f"breaker '{breaker}': the call ran longer than its {timeout:g}s timeout")


class SubscriptionError(EventCenterError, LookupError):
    """Raised for an unknown subscription id or a duplicate subscription name."""


class Backpressure(EventCenterError):
    """Raised when the processor queue stays full longer than ``publish_timeout``.

    The event was not accepted: the caller still owns it and may retry later.
    """


class ProcessorClosed(EventCenterError, RuntimeError):
    """Raised when publishing to a processor that is stopping, stopped or not yet running."""


class RecordingFailed(EventCenterError):
    """Raised when a decision could not be written to the event store (the cause is chained)."""


class DeadLetterNotFound(EventCenterError, LookupError):
    """Raised when a dead letter id does not exist."""


class ShutdownInterrupted(EventCenterError):
    """The reason recorded on deliveries that were still pending when the processor stopped.

    They are dead-lettered with this error, so they can be replayed after a restart.
    """


class ConfigurationError(EventCenterError, ValueError):
    """Raised when a config file is missing or malformed, or settings cannot work together."""


class StoreUnavailable(EventCenterError):
    """Raised when the database cannot be reached, has no usable schema, or the data dir is
    unusable. The message names the problem and the URL (never its password)."""


class StoreNotFound(StoreUnavailable):
    """Raised by read-only access when there is no store at the given place (it is never
    created by reading: a mistyped ``--data-dir`` says so instead of making an empty one)."""


class CenterLocked(EventCenterError):
    """Raised when another process is already the active center of this name on this store."""


class ApiKeyRefused(EventCenterError):
    """Raised when an API key cannot be created or revoked as asked: a tenant name that is not
    valid, a label too long, an id that names no key. The message says which."""


class LeaseLost(EventCenterError):
    """Raised when this process lost its lease on the center: another one took over, so this
    one must stop writing (its fencing token is outdated)."""


class ReplayRefused(EventCenterError):
    """Raised when a dead letter cannot be replayed now: it is being replayed by another
    caller, or was replayed already. The message says which."""


class HandlerTimeout(EventCenterError):
    """The reason recorded on a handler attempt that ran longer than its subscription's
    timeout. It is a handler failure: retried, then dead-lettered with this reason."""


class InvalidFailure(EventCenterError, ValueError):
    """Raised when a failure reported for root-cause analysis (or the context gathered for
    it) fails validation. ``field`` names the offending field, ``reason`` what is wrong."""

    def __init__(self, field: str, reason: str) -> None:
        self.field = field
        self.reason = reason
        super().__init__(f"invalid failure: field '{field}': {reason}")


class RcaCaseRefused(EventCenterError):
    """Raised when an RCA case refuses a step that does not follow from its state (resolving
    a closed case, healing an escalated one, a verdict for an attempt that was not made).

    ``case`` is the case id, ``command`` what was asked, ``status`` where the case was.
    """

    def __init__(self, case: str, command: str, status: str, reason: str) -> None:
        self.case = case
        self.command = command
        self.status = status
        self.reason = reason
        super().__init__(f"rca case {case}: '{command}' refused while {status}: {reason}")


class RcaCaseNotFound(EventCenterError, LookupError):
    """Raised when no RCA case has the id given (the message names it)."""


class PermanentFailure(EventCenterError):
    """Raise from a handler when retrying cannot help (bad payload, unknown target).

    The processor dead-letters the event at once instead of retrying it.
    """


class InvalidNotice(EventCenterError, ValueError):
    """Raised when an escalation notice is built with values it cannot hold (an empty case id,
    escalated before it was opened, a time that is not finite) or a body read back is not a
    notice of this format. ``field`` names the first offending field."""

    def __init__(self, field: str, reason: str) -> None:
        self.field = field
        self.reason = reason
        super().__init__(f"invalid escalation notice: field '{field}': {reason}")


class InvalidAnswer(EventCenterError, ValueError):
    """Raised when a person's answer to an escalated case fails validation: an unknown action
    or field, no one named as ``by``, a resolve without a note. ``field`` names the first
    offending field; the message lists every problem, so one correction fixes them all."""

    def __init__(self, problems: list[tuple[str, str]]) -> None:
        self.problems = problems
        self.field, self.reason = problems[0]
        listed = "; ".join(f"field '{field}': {reason}" for field, reason in problems)
        super().__init__(f"invalid answer: {listed}")


class SignatureInvalid(EventCenterError, ValueError):
    """Raised by ``verify_signature`` when a webhook body cannot be trusted: the signature
    header is missing or malformed, its timestamp lies outside the tolerance (a replay, or a
    clock far off), or no signature in it matches the body with the shared secret."""


class UnknownService(EventCenterError, LookupError):
    """Raised when a health check, recovery or degradation is asked for a service that nothing
    was registered under (a typo in a name shows at the first call, not as silence)."""

    def __init__(self, what: str, service: str, known: list[str]) -> None:
        self.service = service
        listed = ", ".join(sorted(known)) or "none"
        super().__init__(f"no {what} named {service!r} (registered: {listed})")


class RecoveryRefused(EventCenterError):
    """Raised when a service's recovery log refuses a step that does not follow from what it
    holds: an attempt or an end for an incident that is not the open one, an attempt out of
    order, an incident opened while another is open.

    ``service`` names the service, ``step`` what was asked.
    """

    def __init__(self, service: str, step: str, reason: str) -> None:
        self.service = service
        self.step = step
        self.reason = reason
        super().__init__(f"recovery of '{service}': {step} refused: {reason}")


class StrategyDeclined(EventCenterError):
    """Raised by a degradation strategy that cannot answer this call (no good value cached, or
    one older than allowed); the next strategy by priority is tried, and the reason is kept."""


class ServiceUnavailable(EventCenterError):
    """Raised by a degraded call when the service did not answer and no degradation strategy
    could: ``reasons`` lists why each one declined, the service's own error is the cause."""

    def __init__(self, service: str, reason: str, reasons: list[str]) -> None:
        self.service = service
        self.reason = reason
        self.reasons = reasons
        tried = "; ".join(reasons) or "no strategy registered"
        super().__init__(
            f"service {service!r} is unavailable ({reason}) and no fallback answered: {tried}"
        )


class InvalidCurve(EventCenterError, ValueError):
    """Raised when a load test's measured curve cannot be judged: no steps, or a step whose
    figures cannot be true (a negative rate, p50 above p95, an error rate outside 0..1).
    ``step`` is the offending step's index in the curve (None for the curve as a whole),
    ``field`` its field."""

    def __init__(self, step: int | None, field: str, reason: str) -> None:
        self.step = step
        self.field = field
        self.reason = reason
        where = "curve" if step is None else f"step #{step}"
        super().__init__(f"invalid load-test curve: {where}: field '{field}': {reason}")


class ThroughputRefused(EventCenterError):
    """Raised when a throughput record refuses a command that does not belong to it (a
    regression for another service or signature, or one recorded before any measurement), or a
    service's deployment order is given an empty name or signature.

    ``record`` names it (``service@signature``), ``command`` what was asked."""

    def __init__(self, record: str, command: str, reason: str) -> None:
        self.record = record
        self.command = command
        self.reason = reason
        super().__init__(f"throughput record {record}: '{command}' refused: {reason}")


class TuningRefused(EventCenterError):
    """Raised when the adjustment coordinator cannot tune a service: no capacity is known for
    it yet (measure it first), or it has no agent to send a frequency to.

    ``service`` names it; the message says what is missing."""

    def __init__(self, service: str, reason: str) -> None:
        self.service = service
        self.reason = reason
        super().__init__(f"cannot tune service {service!r}: {reason}")


class TargetUnreachable(EventCenterError):
    """Raised when a load test's target does not answer (connection refused, DNS, timeout)
    before the first step: nothing was measured. ``target`` is the URL, ``reason`` why."""

    def __init__(self, target: str, reason: str) -> None:
        self.target = target
        self.reason = reason
        super().__init__(f"load-test target {target} is unreachable: {reason}")


class LoadTestFailed(EventCenterError):
    """Raised when a load test ends without an answer: the load generator could not start or
    exited with an error, or the test ran past its hard time limit. ``reason`` says which;
    ``steps`` holds what was measured before it ended (plain dicts of the steps)."""

    def __init__(self, reason: str, steps: tuple[dict[str, object], ...] = ()) -> None:
        self.reason = reason
        self.steps = steps
        super().__init__(f"load test failed: {reason}")


class DispatchRefused(EventCenterError):
    """Raised before anything is sent when a dispatch cannot be made at all: an agent's URL is
    not an http(s) URL, an agent of the adjustment has no endpoint. ``agent`` names it."""

    def __init__(self, agent: str, reason: str) -> None:
        self.agent = agent
        self.reason = reason
        super().__init__(f"cannot dispatch to agent {agent!r}: {reason}")


STORE_WAIT_NOTE = "cancelled while waiting for the store to commit a write"


def note_store_wait(cancelled: BaseException) -> None:
    """Mark a cancellation that interrupted a wait on the store (the store port calls this).

    A handler attempt whose timeout fired while it waited for a write is not the handler's
    failure; the note travels with the exception, so the processor can tell, even when the
    store never reported a fault (a silent network leaves the connection hanging).
    """
    if STORE_WAIT_NOTE not in getattr(cancelled, "__notes__", ()):
        cancelled.add_note(STORE_WAIT_NOTE)


def causes(error: BaseException) -> Iterator[BaseException]:
    """``error``, then what caused it (``__cause__``, else ``__context__``), and so on; each
    exception once, so a chain that loops back ends."""
    seen: set[int] = set()
    current: BaseException | None = error
    while current is not None and id(current) not in seen:
        seen.add(id(current))
        yield current
        current = current.__cause__ or current.__context__


def waited_on_store(error: BaseException) -> bool:
    """True if ``error`` was caused by a cancellation noted by :func:`note_store_wait`."""
    return any(STORE_WAIT_NOTE in getattr(cause, "__notes__", ()) for cause in causes(error))
