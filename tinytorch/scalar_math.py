"""IEEE scalar math: the values torch returns where Python's ``math`` raises.

Python raises ``ZeroDivisionError`` for ``1 / 0`` and ``ValueError`` for ``math.log(0)``; torch (IEEE 754)
returns ``inf``, ``-inf`` or ``nan``. ``Value`` (scalar autograd) and the tensor ops both use these.
"""

from __future__ import annotations

import math

__all__ = ["ieee_div", "ieee_exp", "ieee_pow", "ieee_log", "stable_sigmoid"]


def ieee_div(a: float, b: float) -> float:
    """``a / b``, with ``x / 0`` = +-inf (sign of x times sign of 0) and ``0 / 0`` = nan."""
    if b == 0.0:
        return math.nan if a == 0.0 or math.isnan(a) else math.copysign(math.inf, a) * math.copysign(1.0, b)
    return a / b


def ieee_exp(x: float) -> float:
    """``exp(x)``, inf past float64's range instead of ``OverflowError`` (nan stays nan)."""
    try:
        return math.exp(x)
    except OverflowError:
        return math.inf


def ieee_pow(a: float, b: float) -> float:
    """``a ** b``, with overflow = inf, ``0 ** negative`` = inf, ``negative ** fraction`` = nan."""
    try:
        return math.pow(a, b)
    except OverflowError:
        return math.inf
    except ValueError:
        return math.inf if a == 0.0 else math.nan


def ieee_log(a: float) -> float:
    """``log(a)``, with ``log(0)`` = -inf and ``log(negative)`` = nan."""
    if a > 0.0:
        return math.log(a)
    return -math.inf if a == 0.0 else math.nan


def stable_sigmoid(a: float) -> float:
    """``1 / (1 + exp(-a))`` in two branches so ``exp`` never overflows."""
    if a >= 0.0:
        return 1.0 / (1.0 + math.exp(-a))
    e = math.exp(a)
    return e / (1.0 + e)
