"""Counter-based random numbers from a per-particle key, inside ONNX graphs and in numpy.

Why: noise must depend only on (rng_key, step stream, draw index), never on batch composition,
model instance or session state, and must never travel over the network. ONNX ``Random*Like``
cannot give that (their state lives in the runtime session).

Algorithm (SplitMix64 finaliser, Steele et al. 2014, which passes BigCrush):

    mix(x)   = x ^= x >> 30; x *= 0xBF58476D1CE4E5B9; x ^= x >> 27; x *= 0x94D049BB133111EB; x ^= x >> 31
    word_j   = mix(mix(rng_key) ^ mix((stream << 32) | j))
    u_j      = ((word_j >> 40) + 0.5) * 2**-24                  uniform in (0, 1), float32, 24 bits
    normals  = Box-Muller on consecutive pairs (u_2k, u_2k+1), float32; |z| <= 5.9, with log, sqrt,
               cos and sin from :mod:`.elementary` (the same bits in numpy and in any runtime)

ONNX Runtime 1.19.2 (NGC 24.10) has no uint64 Add or Mul on CPU, so the multiplications run as
int64 (two's-complement wrap-around gives the same bits) between bit-preserving Casts.
"""

from __future__ import annotations

import numpy as np
from numpy.typing import NDArray

from ufsim_client.keys import splitmix64

from . import elementary
from .builder import GraphBuilder
from .elementary import V

_GOLDEN = np.uint64(0x9E3779B97F4A7C15)
_M1 = 0xBF58476D1CE4E5B9
_M2 = 0x94D049BB133111EB
_SHIFTS = (30, 27, 31)
_U24 = 2.0**-24


def mix64(x: NDArray[np.uint64]) -> NDArray[np.uint64]:
    """SplitMix64 finaliser on uint64 arrays: the client's ``splitmix64`` without its golden increment."""
    with np.errstate(over="ignore"):
        return splitmix64(np.asarray(x, dtype=np.uint64) - _GOLDEN)


def counters(stream: int, count: int) -> NDArray[np.uint64]:
    """The mixed per-draw counters of a stream, shape (1, count), uint64."""
    j = np.arange(count, dtype=np.uint64)
    return mix64((np.uint64(stream) << np.uint64(32)) | j).reshape(1, count)


def uniforms(keys: NDArray[np.uint64], stream: int, count: int) -> NDArray[np.float32]:
    """Reference implementation: uniforms (N, count) in (0, 1), float32."""
    keys = np.asarray(keys, dtype=np.uint64).reshape(-1, 1)
    words = mix64(mix64(keys) ^ counters(stream, count))
    return (((words >> np.uint64(40)).astype(np.float32) + np.float32(0.5)) * np.float32(_U24)).astype(
        np.float32
    )


def normals(keys: NDArray[np.uint64], stream: int, dim: int) -> NDArray[np.float32]:
    """Reference implementation: standard normals (N, dim), float32, by Box-Muller."""
    if dim % 2:
        raise ValueError(f"noise_dim must be even for Box-Muller, got {dim}")
    u = uniforms(keys, stream, dim)
    z = np.empty_like(u)
    z[:, 0::2], z[:, 1::2] = _box_muller(elementary.NumpyOps(), u[:, 0::2], u[:, 1::2])
    return z


def _box_muller(o: elementary.Ops[V], u1: V, u2: V) -> tuple[V, V]:
    """Two independent N(0, 1) from two uniforms, with batch-independent elementary functions."""
    r = elementary.sqrt(
        o, o.mul(elementary.log(o, u1, min_exp=-25, max_exp=1), o.const(-2.0)), min_exp=-24, max_exp=6
    )
    cos, sin = elementary.cos_sin_turns(o, u2)
    return o.mul(r, cos), o.mul(r, sin)


def _mix_graph(b: GraphBuilder, x: str) -> str:
    """mix64 as ONNX nodes on a UINT64 tensor."""
    for shift, mult in ((_SHIFTS[0], _M1), (_SHIFTS[1], _M2)):
        x = b.op("BitwiseXor", x, b.op("BitShift", x, b.const(shift, np.uint64), direction="RIGHT"))
        signed = b.cast(x, "INT64")
        x = b.cast(
            b.op("Mul", signed, b.const(np.array(mult, dtype=np.uint64).view(np.int64), np.int64)), "UINT64"
        )
    return b.op("BitwiseXor", x, b.op("BitShift", x, b.const(_SHIFTS[2], np.uint64), direction="RIGHT"))


def uniforms_graph(b: GraphBuilder, key: str, stream: int, count: int) -> str:
    """Add nodes computing :func:`uniforms` from a [N, 1] UINT64 key; returns [N, count] FP32."""
    words = _mix_graph(b, b.op("BitwiseXor", _mix_graph(b, key), b.const(counters(stream, count), np.uint64)))
    top = b.cast(b.op("BitShift", words, b.const(40, np.uint64), direction="RIGHT"), "FP32")
    return b.op("Mul", b.op("Add", top, b.const(0.5)), b.const(_U24))


def normals_graph(b: GraphBuilder, key: str, stream: int, dim: int) -> str:
    """Add nodes computing :func:`normals`; returns [N, dim] FP32."""
    if dim % 2:
        raise ValueError(f"noise_dim must be even for Box-Muller, got {dim}")
    u = uniforms_graph(b, key, stream, dim)
    u1 = b.cols(u, range(0, dim, 2))
    u2 = b.cols(u, range(1, dim, 2))
    cos, sin = _box_muller(elementary.GraphOps(b), u1, u2)
    # interleave (cos_k, sin_k) -> columns 2k, 2k+1
    pairs = b.op(
        "Concat",
        b.op("Unsqueeze", cos, b.const([2], np.int64)),
        b.op("Unsqueeze", sin, b.const([2], np.int64)),
        axis=2,
    )
    return b.op("Reshape", pairs, b.const([-1, dim], np.int64))
