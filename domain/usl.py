"""A Universal Scalability Law fit, as a cross-check of the knee a step search found.

Gunther's law relates throughput X to concurrency N:

    X(N) = lambda * N / (1 + sigma * (N - 1) + kappa * N * (N - 1))

``lambda`` is the throughput of one unit of concurrency, ``sigma`` contention (queueing on a
shared resource: X levels off at ``lambda / sigma``) and ``kappa`` coherency cost (crosstalk:
X peaks at ``N* = sqrt((1 - sigma) / kappa)`` and then falls). Dividing through gives a model
linear in its coefficients, ``N / X = a + b (N - 1) + c N (N - 1)`` with ``a = 1/lambda``,
``b = sigma/lambda``, ``c = kappa/lambda``: :func:`fit_usl` solves that by least squares with
``sigma, kappa >= 0`` (the best of the fits with each coefficient free or held at zero), in
pure Python: three unknowns need no numerical library.

An open-model test sets the rate, not the concurrency; :func:`little_points` derives N from
Little's law (N = X * latency) using each step's p50, a stand-in for the mean that a curve
does not carry (it under-states N under heavy queueing, so the fit is a cross-check, never the
answer).
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass
from itertools import combinations

from eventcenter.domain.errors import InvalidCurve
from eventcenter.domain.knee import Step

#: Coefficients of the linearised model: a (always free), b (sigma), c (kappa).
_TERMS = 3


@dataclass(frozen=True, slots=True)
class UslFit:
    """The fitted law. ``peak_x`` is the most throughput the law allows: X(N*) when kappa > 0,
    else the ceiling ``lambda / sigma`` (infinite when sigma is 0 too: no limit seen);
    ``peak_n`` is N* (None when X only levels off). ``r_squared`` is measured on X."""

    sigma: float
    kappa: float
    lam: float
    peak_n: float | None
    peak_x: float
    r_squared: float

    def throughput(self, n: float) -> float:
        """X(N) by the fitted law."""
        return self.lam * n / (1 + self.sigma * (n - 1) + self.kappa * n * (n - 1))


def little_points(steps: Sequence[Step]) -> list[tuple[float, float]]:
    """(N, X) per step with any throughput: N = achieved * p50 (Little's law), X = achieved."""
    return [
        (step.achieved * step.p50, step.achieved)
        for step in steps
        if step.achieved > 0 and step.p50 > 0
    ]


def fit_usl(points: Sequence[tuple[float, float]]) -> UslFit:
    """Fit the law to (N, X) points (N > 0, X > 0). Raises :class:`InvalidCurve` with fewer
    than three distinct N or a point that is not positive."""
    for index, (n, x) in enumerate(points):
        if not (math.isfinite(n) and math.isfinite(x) and n > 0 and x > 0):
            raise InvalidCurve(index, "point", f"N and X must be positive, got ({n}, {x})")
    if len({n for n, _ in points}) < _TERMS:
        raise InvalidCurve(None, "points", "a USL fit needs at least three distinct N")
    rows = [(1.0, n - 1, n * (n - 1)) for n, _ in points]
    ys = [n / x for n, x in points]
    best: tuple[float, list[float]] | None = None
    for free in _subsets():
        coefficients = _least_squares(rows, ys, free)
        if coefficients is None or coefficients[0] <= 0 or min(coefficients[1:]) < 0:
            continue
        error = _sse(points, coefficients)
        if math.isfinite(error) and (best is None or error < best[0]):
            best = (error, coefficients)
    if best is None:
        raise InvalidCurve(None, "points", "no USL curve with sigma, kappa >= 0 fits these points")
    a, b, c = best[1]
    return _fit(points, 1 / a, b / a, c / a)


def _subsets() -> list[tuple[int, ...]]:
    """Which coefficients are free: a always, b and c each free or held at zero."""
    return [(0, *extra) for k in range(_TERMS) for extra in combinations((1, 2), k)]


def _least_squares(
    rows: list[tuple[float, float, float]], ys: list[float], free: tuple[int, ...]
) -> list[float] | None:
    """Solve the normal equations for the free coefficients (the others 0); None if singular."""
    k = len(free)
    matrix = [[sum(r[i] * r[j] for r in rows) for j in free] for i in free]
    vector = [sum(r[i] * y for r, y in zip(rows, ys, strict=True)) for i in free]
    solved = _solve(matrix, vector)
    if solved is None:
        return None
    coefficients = [0.0] * _TERMS
    for position in range(k):
        coefficients[free[position]] = solved[position]
    return coefficients


def _solve(matrix: list[list[float]], vector: list[float]) -> list[float] | None:
    """Gaussian elimination with partial pivoting on a small system."""
    n = len(vector)
    augmented = [[*row, value] for row, value in zip(matrix, vector, strict=True)]
    scale = max((abs(v) for row in matrix for v in row), default=0.0) or 1.0
    for column in range(n):
        pivot = max(range(column, n), key=lambda r: abs(augmented[r][column]))
        if abs(augmented[pivot][column]) <= 1e-12 * scale:
            return None
        augmented[column], augmented[pivot] = augmented[pivot], augmented[column]
        for r in range(column + 1, n):
            factor = augmented[r][column] / augmented[column][column]
            for c in range(column, n + 1):
                augmented[r][c] -= factor * augmented[column][c]
    solution = [0.0] * n
    for r in reversed(range(n)):
        total = augmented[r][n] - sum(augmented[r][c] * solution[c] for c in range(r + 1, n))
        solution[r] = total / augmented[r][r]
    return solution


def _sse(points: Sequence[tuple[float, float]], coefficients: list[float]) -> float:
    """Squared error in X; infinite when the curve is not positive at some point."""
    a, b, c = coefficients
    total = 0.0
    for n, x in points:
        denominator = a + b * (n - 1) + c * n * (n - 1)
        if denominator <= 0:
            return math.inf
        total += (x - n / denominator) ** 2
    return total


def _fit(points: Sequence[tuple[float, float]], lam: float, sigma: float, kappa: float) -> UslFit:
    peak_n: float | None = None
    if kappa > 0 and sigma < 1:
        peak_n = math.sqrt((1 - sigma) / kappa)
        peak_x = lam * peak_n / (1 + sigma * (peak_n - 1) + kappa * peak_n * (peak_n - 1))
    elif sigma > 0:
        peak_x = lam / sigma
    else:
        peak_x = math.inf
    fit = UslFit(sigma, kappa, lam, peak_n, peak_x, 0.0)
    mean = sum(x for _, x in points) / len(points)
    total = sum((x - mean) ** 2 for _, x in points)
    residual = sum((x - fit.throughput(n)) ** 2 for n, x in points)
    r_squared = 1 - residual / total if total > 0 else 1.0
    return UslFit(sigma, kappa, lam, peak_n, peak_x, r_squared)
