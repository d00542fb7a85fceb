"""Simulated targets for the tuning tests: what a load test measures, and a plant to control.

Both model a service of ``servers`` slots with a fixed ``service_time``, so its capacity is
``servers / service_time``; the waiting time below capacity follows Sakasegawa's M/M/c
approximation, ``Wq = s * rho ** (sqrt(2 (c + 1)) - 1) / (c (1 - rho))``: flat at low load,
steep near capacity, as a real queueing target.
"""

from __future__ import annotations

import math
import random
from dataclasses import dataclass, field

from eventcenter.domain.knee import Step
from eventcenter.domain.rate_strategies import Observation


def queue_wait(rho: float, service_time: float, servers: int) -> float:
    """Mean seconds a request waits for a slot at utilisation ``rho`` < 1."""
    exponent = math.sqrt(2 * (servers + 1)) - 1
    return float(service_time * rho**exponent / (servers * (1 - rho)))


@dataclass
class SteppedTarget:
    """Answers a load-test step at an offered rate as the measurement would.

    ``generator_ceiling`` caps what the load generator can offer (it sends less, the target
    stays fast); ``error_from`` is the rate past which the target fails a growing share of
    requests (errors before latency); ``noise`` is the relative spread of each measurement.
    """

    servers: int = 4
    service_time: float = 0.02
    hold: float = 10.0
    generator_ceiling: float = math.inf
    error_from: float = math.inf
    noise: float = 0.0
    seed: int = 0
    rng: random.Random = field(init=False)

    def __post_init__(self) -> None:
        self.rng = random.Random(self.seed)

    @property
    def capacity(self) -> float:
        return self.servers / self.service_time

    def step(self, offered: float) -> Step:
        sent = min(offered, self.generator_ceiling)
        rho = sent / self.capacity
        s = self.service_time
        if rho < 0.999:
            achieved = sent
            wait = queue_wait(rho, s, self.servers)
        else:  # overloaded: the backlog grows over the hold; a request waits half of it on average
            achieved = self.capacity
            wait = queue_wait(0.999, s, self.servers) + (sent - achieved) * self.hold / 2 / achieved
        p50, p95, p99 = s + 0.7 * wait, s + 3.0 * wait, s + 4.6 * wait
        error_rate = max(0.0, (sent - self.error_from) / sent) if sent > self.error_from else 0.0
        if self.noise:
            jitter = math.exp(self.rng.gauss(0.0, self.noise))
            p50, p95, p99 = p50 * jitter, p95 * jitter, p99 * jitter
            achieved = min(sent, achieved * (1 + self.rng.gauss(0.0, self.noise / 10)))
        return Step(offered, achieved, p50, p95, p99, error_rate, self.hold)

    def slo_rate(self, slo_p95: float) -> float:
        """The highest rate whose noise-free p95 stays within ``slo_p95`` (by bisection)."""
        low, high = 0.0, self.capacity * 0.999
        for _ in range(60):
            middle = (low + high) / 2
            p95 = self.service_time + 3.0 * queue_wait(
                middle / self.capacity, self.service_time, self.servers
            )
            low, high = (middle, high) if p95 <= slo_p95 else (low, middle)
        return low


@dataclass
class QueueingPlant:
    """A target to control, one period at a time: requests arrive at the rate the agents are
    told, a backlog builds past capacity (and drops what exceeds ``queue_limit``: errors), and
    the reported latency is the p95 proxy ``s + 3 * wait`` where wait is the stationary queue
    wait plus the backlog's. ``noise`` is the relative spread of each latency reading."""

    servers: int = 4
    service_time: float = 0.02
    queue_limit: float = 2000.0
    noise: float = 0.0
    seed: int = 0
    backlog: float = 0.0
    rng: random.Random = field(init=False)

    def __post_init__(self) -> None:
        self.rng = random.Random(self.seed)

    @property
    def capacity(self) -> float:
        return self.servers / self.service_time

    def slo_rate(self, slo_p95: float) -> float:
        """The highest steady rate whose p95 stays within ``slo_p95``: what a load test with
        that SLO reports as the maximum sustainable throughput."""
        return SteppedTarget(self.servers, self.service_time).slo_rate(slo_p95)

    def run(self, rate: float, dt: float, at: float) -> Observation:
        capacity = self.capacity
        arrivals = rate * dt
        before = self.backlog
        after = max(0.0, before + arrivals - capacity * dt)
        dropped = max(0.0, after - self.queue_limit)
        after -= dropped
        self.backlog = after
        served = before + arrivals - dropped - after
        rho = min(rate / capacity, 0.98)
        wait = queue_wait(rho, self.service_time, self.servers) + (before + after) / 2 / capacity
        latency = self.service_time + 3.0 * wait
        if self.noise:
            latency *= math.exp(self.rng.gauss(0.0, self.noise))
        errors = dropped / arrivals if arrivals > 0 else 0.0
        return Observation(at, served / dt, latency, errors)
