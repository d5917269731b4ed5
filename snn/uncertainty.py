"""Spread over repeated runs: mean, sample std, Student-t confidence intervals, Welch's difference of two means.

The t quantile is scipy's.
"""

import math
from dataclasses import dataclass

LEVEL = 0.95  # confidence level of every interval here


@dataclass(frozen=True)
class Summary:
    n: int
    mean: float
    std: float | None  # sample std (n - 1 in the denominator); None for a single value
    ci: tuple[float, float] | None  # confidence interval of the mean; None for a single value


@dataclass(frozen=True)
class Difference:
    delta: float  # mean(a) - mean(b)
    ci: tuple[float, float]
    dof: float  # Welch–Satterthwaite degrees of freedom


def t_quantile(p: float, dof: float) -> float:
    """The p-quantile (0.5 < p < 1) of Student's t with `dof` > 0 degrees of freedom (not necessarily an integer)."""
    if not 0.5 < p < 1 or dof <= 0:
        raise ValueError(f"t_quantile needs 0.5 < p < 1 and dof > 0, got p={p}, dof={dof}")
    from scipy.stats import t  # imported when a report needs it: scipy takes a moment to load

    return float(t.ppf(p, dof))


def _half_width(standard_error: float, dof: float) -> float:
    return 0.0 if standard_error == 0 else t_quantile((1 + LEVEL) / 2, dof) * standard_error


def summarize(values: list[float]) -> Summary:
    n = len(values)
    mean = math.fsum(values) / n
    if n < 2:
        return Summary(n, mean, None, None)
    std = math.sqrt(math.fsum((v - mean) ** 2 for v in values) / (n - 1))
    half = _half_width(std / math.sqrt(n), n - 1)
    return Summary(n, mean, std, (mean - half, mean + half))


def welch_difference(a: list[float], b: list[float]) -> Difference | None:
    """mean(a) - mean(b) with its confidence interval by Welch's t-test (unequal variances); None when either
    side has fewer than two values (no variance to estimate)."""
    if len(a) < 2 or len(b) < 2:
        return None
    first, second = summarize(a), summarize(b)
    va, vb = first.std**2 / first.n, second.std**2 / second.n  # squared standard errors of the two means
    standard_error = math.sqrt(va + vb)
    # Both sides without spread: the interval shrinks to the point (the t quantile's dof is undefined there).
    dof = math.inf if standard_error == 0 else (va + vb) ** 2 / (va**2 / (first.n - 1) + vb**2 / (second.n - 1))
    delta = first.mean - second.mean
    half = _half_width(standard_error, dof)
    return Difference(delta, (delta - half, delta + half), dof)
