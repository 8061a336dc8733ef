"""Number formats and their exact storage cost.

Bytes are kept exact: a format costs ``numerator / denominator`` bytes per
element, plus the scale factors its quantization scheme stores. Totals are
rounded up once, at the end, so the ledger never under-counts (it fails closed).
"""

from __future__ import annotations

from fractions import Fraction
from typing import Literal

WeightDtype = Literal["fp32", "bf16", "fp16", "fp8", "int8", "int4", "fp4", "mxfp4"]
KVDtype = Literal["fp32", "bf16", "fp16", "fp8"]

#: Storage per element, including per-group scales. The scale layouts are the
#: common checkpoint conventions: fp8 with one fp32 scale per 128x128 block
#: (DeepSeek-V3's published checkpoint), int8 per-channel (negligible, ignored),
#: int4 with one bf16 scale per group of 128 (GPTQ/AWQ default), fp4 as NVFP4
#: with one fp8 scale per 16 elements, mxfp4 (OCP microscaling, gpt-oss) with one
#: 8-bit power-of-two scale per 32 elements.
BYTES_PER_ELEMENT: dict[str, Fraction] = {
    "fp32": Fraction(4),
    "bf16": Fraction(2),
    "fp16": Fraction(2),
    "fp8": Fraction(1) + Fraction(4, 128 * 128),
    "int8": Fraction(1),
    "int4": Fraction(1, 2) + Fraction(2, 128),
    "fp4": Fraction(1, 2) + Fraction(1, 16),
    "mxfp4": Fraction(1, 2) + Fraction(1, 32),
}

#: Which column of a GPU's TFLOPS table a weight format computes in. int4/int8
#: weight-only formats are dequantized and multiplied in 16-bit.
COMPUTE_DTYPE: dict[str, str] = {
    "fp32": "bf16",
    "bf16": "bf16",
    "fp16": "fp16",
    "fp8": "fp8",
    "int8": "bf16",
    "int4": "bf16",
    "fp4": "fp4",
    "mxfp4": "fp4",
}

#: Names found in Hugging Face configs (``torch_dtype``/``dtype``) mapped to ours.
HF_DTYPE_NAMES: dict[str, str] = {
    "float32": "fp32",
    "bfloat16": "bf16",
    "float16": "fp16",
    "fp8": "fp8",
    "float8_e4m3fn": "fp8",
}


#: The same sizes as (numerator, denominator) integers: ``nbytes`` is on the hot path
#: of the layout search, and integer arithmetic is exact and far faster than Fraction.
_RATIO: dict[str, tuple[int, int]] = {
    k: (v.numerator, v.denominator) for k, v in BYTES_PER_ELEMENT.items()
}


def nbytes(elements: int, dtype: str) -> int:
    """Bytes needed to store ``elements`` values of ``dtype``, rounded up."""
    num, den = _RATIO[dtype]
    return -((-int(elements) * num) // den)
