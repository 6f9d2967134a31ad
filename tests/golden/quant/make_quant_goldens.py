#!/usr/bin/env python3
"""Writes the golden files that tests/quant_reference.rs checks the Rust kernels against.

The oracle is the Python `gguf` package (`gguf.quants.quantize` / `gguf.quants.dequantize`),
which mirrors ggml's C reference kernels. This script is committed for review and
regeneration; CI does not run it, it only reads the JSON files it wrote.

Usage (a venv outside the repository):

    python3 -m venv /work/venv-gguf
    /work/venv-gguf/bin/pip install gguf numpy
    /work/venv-gguf/bin/python tests/golden/quant/make_quant_goldens.py

Files written next to this script (hex strings are raw little-endian bytes):

    dequant_<TYPE>.json  {"type", "n", "bytes": hex, "values": hex of n f32}
        for F16 BF16 Q4_0 Q4_1 Q5_0 Q5_1 Q8_0 Q2_K Q3_K Q4_K Q5_K Q6_K: one row of a few
        blocks of seeded random bytes whose f16 scale fields (d, m, dmin) are overwritten with
        finite values of sensible magnitude (plus a zero, a negative and a subnormal scale),
        and what `gguf.quants.dequantize` makes of it.
    quant_<TYPE>.json    {"type", "row_len", "rows": [{"label", "input": hex of f32,
                          "bytes": hex}]}
        for F16 BF16 Q8_0 Q4_0: seeded f32 rows (zeros, signed zeros, normal data, large and
        tiny magnitudes, f16-overflowing scales, exact rounding ties, equal-magnitude maxima
        of opposite sign, f32 subnormals) and what `gguf.quants.quantize` makes of them.

What the package cannot cover (checked against gguf 0.19.0 quants.py):
  - K-quant *quantization* (Q2_K..Q6_K): no quantize_blocks, NotImplementedError. Our Q4_K and
    Q6_K quantizers are checked by error level instead (see the Rust tests).
  - Q8_1 and Q8_K: no class at all (neither direction); they are dot-product intermediates.
  - F16 NaNs: numpy may convert f16<->f32 in hardware (F16C), which quiets signalling NaNs,
    so NaN f16 inputs are left out here and checked in Rust by property instead.
  - F32 is a plain reinterpretation; the Rust tests cover it by round trip.

Platform note: in the "f32 subnormals" rows of Q8_0/Q4_0, 1/d overflows to infinity and numpy
casts the resulting inf/NaN quants to integers; on x86-64 that yields 0 (as ggml's C does
there), which the Rust quantizers reproduce. Regenerate on x86-64.
"""

import json
import pathlib
import sys

import numpy as np

import gguf
from gguf import GGMLQuantizationType as T
from gguf import quants

SEED = 20240601
OUT = pathlib.Path(__file__).resolve().parent

# Byte offsets of the f16 scale fields inside each block (ggml-common.h).
F16_FIELDS = {
    "Q4_0": [0],
    "Q4_1": [0, 2],  # d, m
    "Q5_0": [0],
    "Q5_1": [0, 2],  # d, m
    "Q8_0": [0],
    "Q2_K": [80, 82],  # d, dmin (after scales[16], qs[64])
    "Q3_K": [108],  # d (after hmask[32], qs[64], scales[12])
    "Q4_K": [0, 2],  # d, dmin
    "Q5_K": [0, 2],  # d, dmin
    "Q6_K": [208],  # d (after ql[128], qh[64], scales[16])
}


def meta():
    return {
        "generator": "tests/golden/quant/make_quant_goldens.py",
        "seed": SEED,
        "gguf": getattr(gguf, "__version__", None) or _dist_version("gguf"),
        "numpy": np.__version__,
    }


def _dist_version(name):
    from importlib.metadata import version

    return version(name)


def hexb(a: np.ndarray) -> str:
    return np.ascontiguousarray(a).view(np.uint8).tobytes().hex()


def write(name, obj):
    path = OUT / name
    path.write_text(json.dumps(obj, indent=1) + "\n")
    print(f"wrote {path.relative_to(OUT.parent.parent.parent)} ({path.stat().st_size} bytes)")


def scale_values(rng, n_blocks):
    """f16 scale values: mostly 1e-4..3 of either sign, with a few special ones."""
    mag = 10.0 ** rng.uniform(-4.0, 0.5, size=n_blocks)
    sign = np.where(rng.random(n_blocks) < 0.25, -1.0, 1.0)
    v = (mag * sign).astype(np.float16)
    specials = [0.0, -0.5, 2.0**-20, 1.0]  # zero, negative, f16 subnormal, one
    for i, s in enumerate(specials[: max(0, n_blocks - 1)]):
        v[i + 1] = np.float16(s)
    return v


def dequant_case(rng, name, n_blocks):
    qtype = T[name]
    block, type_size = gguf.GGML_QUANT_SIZES[qtype]
    raw = rng.integers(0, 256, size=(n_blocks, type_size), dtype=np.uint8)
    for field in F16_FIELDS[name]:
        raw[:, field : field + 2] = scale_values(rng, n_blocks).view(np.uint8).reshape(n_blocks, 2)
    row = raw.reshape(1, -1)
    values = quants.dequantize(row, qtype).astype(np.float32)
    assert values.shape == (1, n_blocks * block), values.shape
    return {"meta": meta(), "type": name, "n": n_blocks * block, "bytes": hexb(row), "values": hexb(values)}


def half_bits_case(rng, name, n):
    bits = rng.integers(0, 1 << 16, size=n, dtype=np.uint16)
    if name == "F16":
        # No NaNs (see the module docstring); keep infinities.
        nan = ((bits & 0x7C00) == 0x7C00) & ((bits & 0x03FF) != 0)
        bits[nan] &= 0xBFFF  # clear the top exponent bit: a finite value
        specials = [0x0000, 0x8000, 0x0001, 0x8001, 0x03FF, 0x0400, 0x3C00, 0x7BFF, 0xFBFF, 0x7C00, 0xFC00]
    else:
        specials = [0x0000, 0x8000, 0x0001, 0x007F, 0x0080, 0x3F80, 0x7F7F, 0xFF7F, 0x7F80, 0xFF80, 0x7FC0, 0x7F81, 0xFFFF]
    bits[: len(specials)] = specials
    row = bits.view(np.uint8).reshape(1, -1)
    values = quants.dequantize(row, T[name]).astype(np.float32)
    assert values.shape == (1, n), values.shape
    return {"meta": meta(), "type": name, "n": n, "bytes": hexb(row), "values": hexb(values)}


def block_rows(rng, row_len, qmax):
    """Labelled f32 rows for the legacy quantizers (block size 32); qmax is 127 or 8."""
    nb = row_len // 32
    rows = []

    def add(label, x):
        x = np.asarray(x, dtype=np.float32).reshape(row_len)
        rows.append((label, x))

    add("zeros", np.zeros(row_len))
    z = np.zeros(row_len, dtype=np.float32)
    z[::3] = -0.0
    add("signed zeros (first -0)", z)
    add("normal(0,1)", rng.standard_normal(row_len))
    add("normal(0,0.02)", rng.standard_normal(row_len) * 0.02)
    add("large normal(0,1e4)", rng.standard_normal(row_len) * 1e4)
    add("tiny normal(0,1e-6)", rng.standard_normal(row_len) * 1e-6)
    add("huge normal(0,1e7): f16 scale overflows", rng.standard_normal(row_len) * 1e7)
    add("f32 subnormals", rng.standard_normal(row_len) * 1e-40)
    # One large value per block, the rest small: most quants round to the zero point.
    spiky = rng.standard_normal(row_len) * 1e-3
    spiky[rng.integers(0, 32, size=nb) + 32 * np.arange(nb)] = 50.0
    add("one spike per block", spiky)
    # Equal-magnitude extremes of opposite sign: the first one decides the sign of d.
    opp = rng.uniform(-1, 1, size=row_len)
    for b in range(nb):
        i, j = 32 * b + 3, 32 * b + 17
        opp[i], opp[j] = (2.0, -2.0) if b % 2 == 0 else (-2.0, 2.0)
    add("equal |max| of opposite signs", opp)
    # Exact rounding ties: with |max| = qmax·1.0 the scale is 1 (Q8_0: max 127 -> d = 1;
    # Q4_0: max -8 -> d = 1), so k + 0.5 lands exactly halfway between two quants.
    ties = np.zeros(row_len, dtype=np.float32)
    for b in range(nb):
        blk = rng.integers(-qmax, qmax, size=32).astype(np.float32) + 0.5
        blk[0] = -8.0 if qmax == 8 else 127.0
        ties[32 * b : 32 * b + 32] = blk
    add("exact .5 ties", ties)
    add("integers", rng.integers(-20, 21, size=row_len))
    return rows


def quant_case(rng, name, row_len):
    qtype = T[name]
    if name in ("Q8_0", "Q4_0"):
        rows = block_rows(rng, row_len, 127 if name == "Q8_0" else 8)
    elif name == "F16":
        rows = f16_rows(rng, row_len)
    else:
        rows = bf16_rows(rng, row_len)
    out = []
    with np.errstate(over="ignore", invalid="ignore"):
        for label, x in rows:
            q = quants.quantize(x.reshape(1, row_len), qtype)
            out.append({"label": label, "input": hexb(x), "bytes": hexb(q)})
    return {"meta": meta(), "type": name, "row_len": row_len, "rows": out}


def f16_rows(rng, n):
    rows = []
    rows.append(("normal(0,1)", rng.standard_normal(n).astype(np.float32)))
    rows.append(("wide magnitudes 1e-9..1e5.5",
                 (rng.standard_normal(n) * 10.0 ** rng.uniform(-9, 5.5, size=n)).astype(np.float32)))
    # Exactly halfway between neighbouring f16 values (normal, subnormal, and the overflow
    # boundary 65520 = halfway between 65504 and 2^16).
    h = rng.integers(0, 0x7BFF, size=n, dtype=np.uint16)
    lo = h.view(np.float16).astype(np.float32)
    hi = (h + 1).view(np.float16).astype(np.float32)
    mid = ((lo.astype(np.float64) + hi.astype(np.float64)) / 2).astype(np.float32)
    mid[rng.random(n) < 0.5] *= -1
    mid[:4] = [65520.0, -65520.0, 65519.996, 2.0**-25]
    rows.append(("exact f16 ties", mid))
    specials = np.array([0.0, -0.0, np.inf, -np.inf, 65504.0, 70000.0, -1e30, 2.0**-24, 2.0**-26,
                         1e-45, 5.96e-8, 6.1e-5], dtype=np.float32)
    rows.append(("specials", np.resize(specials, n)))
    return rows


def bf16_rows(rng, n):
    rows = []
    rows.append(("normal(0,1)", rng.standard_normal(n).astype(np.float32)))
    rows.append(("random f32 bits (incl. NaN, inf)",
                 rng.integers(0, 1 << 32, size=n, dtype=np.uint64).astype(np.uint32).view(np.float32)))
    # Low 16 bits exactly 0x8000 (ties) with both parities of bit 16, and just around them.
    b = rng.integers(0, 1 << 16, size=n, dtype=np.uint32) << 16
    b = b & np.uint32(0x7F7F0000)
    low = np.array([0x8000, 0x7FFF, 0x8001, 0x0000], dtype=np.uint32)
    b |= low[np.arange(n) % 4]
    rows.append(("ties and near-ties", b.view(np.float32)))
    specials = np.array([0x00000000, 0x80000000, 0x7F800000, 0xFF800000, 0x7F7FFFFF, 0xFF7FFFFF,
                         0x7FC00000, 0x7F800001, 0xFF800001, 0x7FFFFFFF, 0x00000001, 0x007FFFFF],
                        dtype=np.uint32)
    rows.append(("specials", np.resize(specials, n).view(np.float32)))
    return rows


def main():
    rng = np.random.default_rng(SEED)
    for name in ["F16", "BF16"]:
        write(f"dequant_{name}.json", half_bits_case(rng, name, 512))
    for name in ["Q4_0", "Q4_1", "Q5_0", "Q5_1", "Q8_0"]:
        write(f"dequant_{name}.json", dequant_case(rng, name, 8))
    for name in ["Q2_K", "Q3_K", "Q4_K", "Q5_K", "Q6_K"]:
        write(f"dequant_{name}.json", dequant_case(rng, name, 4))
    for name in ["Q8_0", "Q4_0"]:
        write(f"quant_{name}.json", quant_case(rng, name, 128))
    for name in ["F16", "BF16"]:
        write(f"quant_{name}.json", quant_case(rng, name, 96))
    return 0


if __name__ == "__main__":
    sys.exit(main())
