"""Elementary functions built only from exactly rounded float32 arithmetic, as ONNX nodes and in numpy.

Why: ONNX Runtime evaluates ``Log``, ``Sin``, ``Cos``, ``Atan``, ``Asin``, ``Acos`` (and ``Sqrt`` in
1.19.2) with Eigen packet code whose scalar tail rounds differently, so a particle's result would
depend on its position in the batch. Add, Sub, Mul, Div, Floor, comparisons and selections are exactly
rounded everywhere, so functions composed of them give the same bits for a row whatever the batch,
the thread partitioning, the runtime version or the execution provider. Each function is written once
against :class:`Ops` and evaluated either by :class:`NumpyOps` (the reference) or :class:`GraphOps`
(ONNX nodes); the two agree bit for bit. Accuracy: a few float32 ulps.
"""

from __future__ import annotations

import math
from typing import Any, Generic, TypeVar

import numpy as np
from numpy.typing import NDArray

from .builder import GraphBuilder

V = TypeVar("V")

_LN2 = math.log(2.0)
_SQRT2 = math.sqrt(2.0)


class Ops(Generic[V]):
    """The exactly rounded operations the functions below may use."""

    def const(self, value: float) -> V:
        raise NotImplementedError

    def add(self, a: V, b: V) -> V:
        raise NotImplementedError

    def sub(self, a: V, b: V) -> V:
        raise NotImplementedError

    def mul(self, a: V, b: V) -> V:
        raise NotImplementedError

    def div(self, a: V, b: V) -> V:
        raise NotImplementedError

    def floor(self, a: V) -> V:
        raise NotImplementedError

    def abs(self, a: V) -> V:
        raise NotImplementedError

    def max(self, a: V, b: V) -> V:
        raise NotImplementedError

    def min(self, a: V, b: V) -> V:
        raise NotImplementedError

    def less(self, a: V, b: V) -> V:
        raise NotImplementedError

    def equal(self, a: V, b: V) -> V:
        raise NotImplementedError

    def where(self, cond: V, a: V, b: V) -> V:
        raise NotImplementedError


Array = NDArray[Any]
"""float32 values, or the booleans of ``less`` and ``equal``."""


class NumpyOps(Ops[Array]):
    """float32 numpy evaluation (the reference)."""

    def const(self, value: float) -> Array:
        return np.asarray(value, dtype=np.float32)

    def add(self, a: Array, b: Array) -> Array:
        return np.add(a, b, dtype=np.float32)

    def sub(self, a: Array, b: Array) -> Array:
        return np.subtract(a, b, dtype=np.float32)

    def mul(self, a: Array, b: Array) -> Array:
        return np.multiply(a, b, dtype=np.float32)

    def div(self, a: Array, b: Array) -> Array:
        with np.errstate(divide="ignore", invalid="ignore"):
            return np.divide(a, b, dtype=np.float32)

    def floor(self, a: Array) -> Array:
        return np.floor(a)

    def abs(self, a: Array) -> Array:
        return np.abs(a)

    def max(self, a: Array, b: Array) -> Array:
        return np.maximum(a, b)

    def min(self, a: Array, b: Array) -> Array:
        return np.minimum(a, b)

    def less(self, a: Array, b: Array) -> Array:
        return np.less(a, b)

    def equal(self, a: Array, b: Array) -> Array:
        return np.equal(a, b)

    def where(self, cond: Array, a: Array, b: Array) -> Array:
        return np.where(cond, a, b).astype(np.float32)


class GraphOps(Ops[str]):
    """Emits FP32 ONNX nodes into a :class:`GraphBuilder`; values are tensor names."""

    def __init__(self, builder: GraphBuilder) -> None:
        self.b = builder
        self._consts: dict[float, str] = {}

    def const(self, value: float) -> str:
        key = float(np.float32(value))
        if key not in self._consts:
            self._consts[key] = self.b.const(key)
        return self._consts[key]

    def add(self, a: str, b: str) -> str:
        return self.b.op("Add", a, b)

    def sub(self, a: str, b: str) -> str:
        return self.b.op("Sub", a, b)

    def mul(self, a: str, b: str) -> str:
        return self.b.op("Mul", a, b)

    def div(self, a: str, b: str) -> str:
        return self.b.op("Div", a, b)

    def floor(self, a: str) -> str:
        return self.b.op("Floor", a)

    def abs(self, a: str) -> str:
        return self.b.op("Abs", a)

    def max(self, a: str, b: str) -> str:
        return self.b.op("Max", a, b)

    def min(self, a: str, b: str) -> str:
        return self.b.op("Min", a, b)

    def less(self, a: str, b: str) -> str:
        return self.b.op("Less", a, b)

    def equal(self, a: str, b: str) -> str:
        return self.b.op("Equal", a, b)

    def where(self, cond: str, a: str, b: str) -> str:
        return self.b.where(cond, a, b)


def _powers_below(limit: int) -> list[int]:
    """Descending powers of two below ``limit``: enough halving steps to cover exponents up to it."""
    steps: list[int] = []
    k = 1
    while k < limit:
        steps.insert(0, k)
        k *= 2
    return steps


def _horner(o: Ops[V], x: V, coefficients: list[float]) -> V:
    """c0 + x (c1 + x (c2 + ...)), innermost first."""
    result = o.const(coefficients[-1])
    for c in reversed(coefficients[:-1]):
        result = o.add(o.const(c), o.mul(x, result))
    return result


def _below(value: float) -> float:
    """The largest float32 strictly below ``value`` (so ``x >= value`` is ``below(value) < x``)."""
    if value > float(np.finfo(np.float32).max):
        return float(np.finfo(np.float32).max)
    return float(np.nextafter(np.float32(value), np.float32(0.0)))


def _reduce(o: Ops[V], x: V, min_exp: int, max_exp: int, base_log2: int) -> tuple[V, V, V]:
    """Write x, clamped to [2**min_exp, 2**max_exp), as m * b**e with b = 2**base_log2 and m in [1, b).

    Scaling by powers of two is exact, so m and e are exact. Also returns sqrt(b)**e, the scale of
    the square root when b = 4.
    """
    b = 2.0**base_log2
    x = o.min(o.max(x, o.const(2.0**min_exp)), o.const(_below(2.0**max_exp)))
    e, root = o.const(0.0), o.const(1.0)
    for k in _powers_below(math.ceil(max_exp / base_log2)):
        big = o.less(o.const(_below(b**k)), x)
        x = o.where(big, o.mul(x, o.const(b**-k)), x)
        e = o.where(big, o.add(e, o.const(k)), e)
        root = o.where(big, o.mul(root, o.const(b ** (k / 2))), root)
    for k in _powers_below(math.ceil(-min_exp / base_log2) + 1):
        small = o.less(x, o.const(b ** (1 - k)))
        x = o.where(small, o.mul(x, o.const(b**k)), x)
        e = o.where(small, o.sub(e, o.const(k)), e)
        root = o.where(small, o.mul(root, o.const(b ** (-k / 2))), root)
    return x, e, root


def log(o: Ops[V], x: V, *, min_exp: int = -126, max_exp: int = 128) -> V:
    """Natural logarithm of x > 0 clamped to [2**min_exp, 2**max_exp): atanh series after reduction."""
    m, e, _ = _reduce(o, x, min_exp, max_exp, 1)
    high = o.less(o.const(_SQRT2), m)
    m = o.where(high, o.mul(m, o.const(0.5)), m)
    e = o.where(high, o.add(e, o.const(1.0)), e)
    return o.add(o.mul(e, o.const(_LN2)), _log1p_reduced(o, o.sub(m, o.const(1.0))))


def _log1p_reduced(o: Ops[V], z: V) -> V:
    """log(1 + z) for z in [1/sqrt(2) - 1, 0.5] as 2 atanh(z / (2 + z)), keeping small z's precision."""
    s = o.div(z, o.add(z, o.const(2.0)))
    return o.mul(o.add(s, s), _horner(o, o.mul(s, s), [1.0 / n for n in range(1, 15, 2)]))


def sqrt(o: Ops[V], x: V, *, min_exp: int = -126, max_exp: int = 128) -> V:
    """Square root of x >= 0 clamped to [2**min_exp, 2**max_exp) (0 stays 0): Newton on [1, 4)."""
    m, _, root = _reduce(o, x, min_exp, max_exp, 2)
    y = o.div(o.add(m, o.const(2.0)), o.const(3.0))
    for _ in range(4):
        y = o.mul(o.const(0.5), o.add(y, o.div(m, y)))
    return o.where(o.equal(x, o.const(0.0)), o.const(0.0), o.mul(y, root))


def asinh(o: Ops[V], x: V) -> V:
    """Inverse hyperbolic sine, for |x| up to 2**60 (larger values are clamped)."""
    a = o.min(o.abs(x), o.const(2.0**60))
    root = sqrt(o, o.add(o.mul(a, a), o.const(1.0)), min_exp=0, max_exp=122)
    large = log(o, o.add(a, root), min_exp=0, max_exp=62)
    small_a = o.min(a, o.const(0.4))
    small = _log1p_reduced(o, o.add(small_a, o.div(o.mul(small_a, small_a), o.add(root, o.const(1.0)))))
    r = o.where(o.less(a, o.const(0.4)), small, large)
    return o.where(o.less(x, o.const(0.0)), o.mul(r, o.const(-1.0)), r)


def _atan_series(o: Ops[V], a: V) -> V:
    """atan(a) for |a| <= 2 - sqrt(3): Taylor series to a**17."""
    return o.mul(a, _horner(o, o.mul(o.mul(a, a), o.const(-1.0)), [1.0 / n for n in range(1, 19, 2)]))


def atan2(o: Ops[V], y: V, x: V) -> V:
    """The angle of (x, y) in [-pi, pi]; 0 when x = y = 0."""
    ax, ay = o.abs(x), o.abs(y)
    hi, lo = o.max(ax, ay), o.min(ax, ay)
    a = o.div(lo, o.where(o.equal(hi, o.const(0.0)), o.const(1.0), hi))
    far = o.less(o.const(2.0 - math.sqrt(3.0)), a)
    sqrt3 = o.const(math.sqrt(3.0))
    reduced = o.div(o.sub(o.mul(a, sqrt3), o.const(1.0)), o.add(a, sqrt3))
    r = o.where(far, o.add(o.const(math.pi / 6.0), _atan_series(o, reduced)), _atan_series(o, a))
    r = o.where(o.less(ax, ay), o.sub(o.const(math.pi / 2.0), r), r)
    r = o.where(o.less(x, o.const(0.0)), o.sub(o.const(math.pi), r), r)
    return o.where(o.less(y, o.const(0.0)), o.mul(r, o.const(-1.0)), r)


def cos_sin_turns(o: Ops[V], u: V) -> tuple[V, V]:
    """cos(2 pi u) and sin(2 pi u) for u in [0, 1]: exact quadrant split, Taylor series on [0, pi/2)."""
    v = o.mul(u, o.const(4.0))
    quadrant = o.floor(v)
    theta = o.mul(o.sub(v, quadrant), o.const(math.pi / 2.0))
    minus_t2 = o.mul(o.mul(theta, theta), o.const(-1.0))
    sin = o.mul(theta, _horner(o, minus_t2, [1.0 / math.factorial(n) for n in range(1, 17, 2)]))
    cos = _horner(o, minus_t2, [1.0 / math.factorial(n) for n in range(0, 18, 2)])
    minus = o.const(-1.0)
    q = [o.equal(quadrant, o.const(float(k))) for k in (1, 2, 3)]
    c = o.where(q[0], o.mul(sin, minus), o.where(q[1], o.mul(cos, minus), o.where(q[2], sin, cos)))
    s = o.where(q[0], cos, o.where(q[1], o.mul(sin, minus), o.where(q[2], o.mul(cos, minus), sin)))
    return c, s
