"""Counter-based random numbers from a per-particle key, inside ONNX graphs and in numpy.

Why: noise must depend only on (rng_key, step stream, draw index), never on batch composition,
model instance or session state, and must never travel over the network. ONNX ``Random*Like``
cannot give that (their state lives in the runtime session).

Algorithm (SplitMix64 finaliser, Steele et al. 2014, which passes BigCrush):

    mix(x)   = x ^= x >> 30; x *= 0xBF58476D1CE4E5B9; x ^= x >> 27; x *= 0x94D049BB133111EB; x ^= x >> 31
    word_j   = mix(mix(rng_key) ^ mix((stream << 32) | j))
    u_j      = ((word_j >> 40) + 0.5) * 2**-24                  uniform in (0, 1), float32, 24 bits
    normals  = inverse CDF of word_j by table: bit 63 is the sign, bits 62..32 give the tail probability
               p = (m + 0.5) 2^-32 in (0, 1/2); a float64-built table of Phi^-1 (geometric regions of 2048
               cells, linear inside a cell; the 2048 smallest m exactly) gives |z| to 3e-6, |z| <= 6.34.
               Only integer ops, Gather, Mul and Add: the same bits in numpy and in any runtime, at any batch
               position (ONNX Runtime's vectorised Log/Sqrt/Sin/Cos are not), and no even-dim restriction.

ONNX Runtime 1.19.2 (NGC 24.10) has no uint64 Add or Mul on CPU, so the multiplications run as
int64 (two's-complement wrap-around gives the same bits) between bit-preserving Casts.
"""

from __future__ import annotations

import functools
import statistics

import numpy as np
from numpy.typing import NDArray

from ufsim_client.keys import splitmix64

from .builder import GraphBuilder

_GOLDEN = np.uint64(0x9E3779B97F4A7C15)
_M1 = 0xBF58476D1CE4E5B9
_M2 = 0x94D049BB133111EB
_SHIFTS = (30, 27, 31)
_U24 = 2.0**-24
_P32 = 2.0**-32
# Inverse-CDF table: m = bits 62..32 of a word, tail probability p = (m + 0.5) 2^-32; region r holds
# m in [2^(27-4r), 2^(31-4r)) in _CELLS cells of 2^_SHIFTS_Q[r] values (linear inside a cell), and the last
# region the 2^11 smallest m one by one.
_CELLS = 2048
_SHIFTS_Q = (20, 16, 12, 8, 4, 0)
_THRESHOLDS = np.array([2**11, 2**15, 2**19, 2**23, 2**27], dtype=np.int64)
_SHIFT_TABLE = np.array(_SHIFTS_Q, dtype=np.uint64)
_OFFSETS = np.arange(len(_SHIFTS_Q), dtype=np.int64) * _CELLS
_SCALES = np.array([2.0**-s for s in _SHIFTS_Q], dtype=np.float32)


def mix64(x: NDArray[np.uint64]) -> NDArray[np.uint64]:
    """SplitMix64 finaliser on uint64 arrays: the client's ``splitmix64`` without its golden increment."""
    with np.errstate(over="ignore"):
        return splitmix64(np.asarray(x, dtype=np.uint64) - _GOLDEN)


def counters(stream: int, count: int) -> NDArray[np.uint64]:
    """The mixed per-draw counters of a stream, shape (1, count), uint64."""
    j = np.arange(count, dtype=np.uint64)
    return mix64((np.uint64(stream) << np.uint64(32)) | j).reshape(1, count)


def words(keys: NDArray[np.uint64], stream: int, count: int) -> NDArray[np.uint64]:
    """The raw 64-bit counter-based words (N, count) of a stream, from which uniforms and normals are cut."""
    keys = np.asarray(keys, dtype=np.uint64).reshape(-1, 1)
    return mix64(mix64(keys) ^ counters(stream, count))


def uniforms(keys: NDArray[np.uint64], stream: int, count: int) -> NDArray[np.float32]:
    """Reference implementation: uniforms (N, count) in (0, 1), float32."""
    top = (words(keys, stream, count) >> np.uint64(40)).astype(np.float32)
    return ((top + np.float32(0.5)) * np.float32(_U24)).astype(np.float32)


@functools.cache
def quantile_table() -> tuple[NDArray[np.float32], NDArray[np.float32]]:
    """Per-cell start value and increment of |z| = Phi^-1(1 - p), built in float64 once per process."""
    inv = statistics.NormalDist().inv_cdf
    start, step = [], []
    for shift in _SHIFTS_Q:
        for cell in range(_CELLS):
            lo = -inv((cell * 2.0**shift + 0.5) * _P32)
            start.append(lo)
            step.append(-inv(((cell + 1) * 2.0**shift + 0.5) * _P32) - lo if shift else 0.0)
    return np.asarray(start, dtype=np.float32), np.asarray(step, dtype=np.float32)


def normals(keys: NDArray[np.uint64], stream: int, dim: int) -> NDArray[np.float32]:
    """Reference implementation: standard normals (N, dim), float32, by table inverse CDF."""
    start, step = quantile_table()
    w = words(keys, stream, dim)
    m = (w << np.uint64(1)) >> np.uint64(33)
    region = (m.astype(np.int64)[..., None] < _THRESHOLDS).astype(np.int64).sum(axis=-1)
    shift = _SHIFT_TABLE[region]
    index = m >> shift
    rest = m.astype(np.int64) - (index << shift).astype(np.int64)
    cell = index.astype(np.int64) + _OFFSETS[region]
    t = rest.astype(np.float32) * _SCALES[region]
    magnitude = start[cell] + t * step[cell]
    sign = np.float32(1.0) - np.float32(2.0) * (w >> np.uint64(63)).astype(np.float32)
    return (magnitude * sign).astype(np.float32)


def _mix_graph(b: GraphBuilder, x: str) -> str:
    """mix64 as ONNX nodes on a UINT64 tensor."""
    for shift, mult in ((_SHIFTS[0], _M1), (_SHIFTS[1], _M2)):
        x = b.op("BitwiseXor", x, b.op("BitShift", x, b.const(shift, np.uint64), direction="RIGHT"))
        signed = b.cast(x, "INT64")
        x = b.cast(
            b.op("Mul", signed, b.const(np.array(mult, dtype=np.uint64).view(np.int64), np.int64)), "UINT64"
        )
    return b.op("BitwiseXor", x, b.op("BitShift", x, b.const(_SHIFTS[2], np.uint64), direction="RIGHT"))


def words_graph(b: GraphBuilder, key: str, stream: int, count: int) -> str:
    """Add nodes computing :func:`words` from a [N, 1] UINT64 key; returns [N, count] UINT64."""
    return _mix_graph(b, b.op("BitwiseXor", _mix_graph(b, key), b.const(counters(stream, count), np.uint64)))


def uniforms_graph(b: GraphBuilder, key: str, stream: int, count: int) -> str:
    """Add nodes computing :func:`uniforms` from a [N, 1] UINT64 key; returns [N, count] FP32."""
    words = words_graph(b, key, stream, count)
    top = b.cast(b.op("BitShift", words, b.const(40, np.uint64), direction="RIGHT"), "FP32")
    return b.op("Mul", b.op("Add", top, b.const(0.5)), b.const(_U24))


def normals_graph(b: GraphBuilder, key: str, stream: int, dim: int) -> str:
    """Add nodes computing :func:`normals` (integer ops, Gather, Mul, Add only); returns [N, dim] FP32."""
    start, step = quantile_table()
    w = words_graph(b, key, stream, dim)
    m = b.op(
        "BitShift",
        b.op("BitShift", w, b.const(1, np.uint64), direction="LEFT"),
        b.const(33, np.uint64),
        direction="RIGHT",
    )
    m_signed = b.cast(m, "INT64")
    below = b.op("Less", b.op("Unsqueeze", m_signed, b.const([2], np.int64)), b.const(_THRESHOLDS, np.int64))
    region = b.op("ReduceSum", b.cast(below, "INT64"), b.const([2], np.int64), keepdims=0)
    shift = b.op("Gather", b.const(_SHIFT_TABLE, np.uint64), region)
    index = b.op("BitShift", m, shift, direction="RIGHT")
    rest = b.op("Sub", m_signed, b.cast(b.op("BitShift", index, shift, direction="LEFT"), "INT64"))
    cell = b.op("Add", b.cast(index, "INT64"), b.op("Gather", b.const(_OFFSETS, np.int64), region))
    t = b.op("Mul", b.cast(rest, "FP32"), b.op("Gather", b.const(_SCALES), region))
    magnitude = b.op(
        "Add", b.op("Gather", b.const(start), cell), b.op("Mul", t, b.op("Gather", b.const(step), cell))
    )
    top = b.cast(b.op("BitShift", w, b.const(63, np.uint64), direction="RIGHT"), "FP32")
    sign = b.op("Sub", b.const(1.0), b.op("Mul", b.const(2.0), top))
    return b.op("Mul", magnitude, sign)
