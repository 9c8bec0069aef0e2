"""The Python dtype table behind QuantizationSpec equals the C++ format table the kernels use."""

from __future__ import annotations

import pytest
import torch

import coreai_opt  # noqa: F401  (loads the ops)
from coreai_opt.quantization import QuantizationSpec
from coreai_opt.quantization.spec._dtype_table import quant_range

DTYPES = [
    torch.int8,
    torch.uint8,
    torch.int4,
    torch.uint4,
    torch.int2,
    torch.uint2,
    torch.float8_e4m3fn,
    torch.float8_e5m2,
    torch.float4_e2m1fn_x2,
]


@pytest.mark.parametrize("narrow", [False, True])
@pytest.mark.parametrize("dtype", DTYPES, ids=str)
def test_python_table_equals_cpp_table(dtype: torch.dtype, narrow: bool) -> None:
    """quant_range (Python) and torch.ops.coreai_opt.format_range (C++) agree on every dtype."""
    assert list(quant_range(dtype, narrow)) == torch.ops.coreai_opt.format_range(dtype, narrow)


@pytest.mark.parametrize("qscheme", ["symmetric", "asymmetric", "symmetric_with_clipping"])
@pytest.mark.parametrize("dtype", DTYPES[:6], ids=str)
def test_spec_quant_range_comes_from_the_cpp_table(dtype: torch.dtype, qscheme: str) -> None:
    """QuantizationSpec.quant_min / quant_max equal the C++ range for the spec's scheme."""
    spec = QuantizationSpec(dtype=dtype, qscheme=qscheme)
    lo, hi = torch.ops.coreai_opt.format_range(dtype, qscheme == "symmetric_with_clipping")
    assert (spec.quant_min, spec.quant_max) == (lo, hi)
