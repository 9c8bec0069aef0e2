"""coreai_opt.pack / unpack of int4 / uint4 / int2 / uint2 and FP4 codes."""

from __future__ import annotations

import pytest
import reference as ref
import torch

ops = torch.ops.coreai_opt

INT_PACKED = [torch.int4, torch.uint4, torch.int2, torch.uint2]


def int_codes(dtype: torch.dtype, shape: tuple[int, ...], container: torch.dtype) -> torch.Tensor:
    """Random codes covering the dtype's whole range."""
    bits, signed = ref.INT_DTYPES[dtype]
    lo, hi = ref.int_range(bits, signed)
    return torch.randint(lo, hi + 1, shape).to(container)


@pytest.mark.parametrize("container", [torch.int8, torch.int32, torch.int64, torch.uint8], ids=str)
@pytest.mark.parametrize("shape", [(16,), (3, 8), (2, 5, 12), (4, 0)], ids=str)
@pytest.mark.parametrize("dtype", INT_PACKED, ids=str)
def test_int_round_trip(dtype: torch.dtype, shape: tuple[int, ...], container: torch.dtype) -> None:
    if container == torch.uint8 and ref.INT_DTYPES[dtype][1]:
        container = torch.int16  # negative codes need a signed container
    q = int_codes(dtype, shape, container)
    packed = ops.pack(q, dtype)
    assert packed.dtype == torch.uint8
    per_byte = 8 // ref.PACK_BITS[dtype]
    assert packed.shape == (*shape[:-1], shape[-1] // per_byte)
    assert torch.equal(packed, ref.pack(q, dtype))
    out = ops.unpack(packed, dtype)
    want_dtype = torch.int8 if ref.INT_DTYPES[dtype][1] else torch.uint8
    assert out.dtype == want_dtype
    assert torch.equal(out, q.to(want_dtype))
    assert torch.equal(out, ref.unpack(packed, dtype))


@pytest.mark.parametrize("dtype", [*INT_PACKED, torch.float4_e2m1fn_x2], ids=str)
def test_unpack_every_byte(dtype: torch.dtype) -> None:
    """All 256 bytes decode like the reference, and pack(unpack(b)) == b."""
    packed = torch.arange(256, dtype=torch.uint8).reshape(4, 64)
    out = ops.unpack(packed, dtype)
    assert torch.equal(out, ref.unpack(packed, dtype))
    assert torch.equal(ops.pack(out, dtype), packed)


def test_lower_index_in_lower_bits() -> None:
    """The documented bit order, spelled out on one byte per format."""
    assert ops.pack(torch.tensor([1, 2], dtype=torch.int8), torch.uint4).item() == 1 | 2 << 4
    assert ops.pack(torch.tensor([-1, 0], dtype=torch.int8), torch.int4).item() == 0x0F
    codes = torch.tensor([1, 2, 3, 0], dtype=torch.int8)
    assert ops.pack(codes, torch.uint2).item() == 1 | 2 << 2 | 3 << 4
    assert ops.pack(torch.tensor([0.5, -6.0]), torch.float4_e2m1fn_x2).item() == 0x1 | 0xF << 4


@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16, torch.float64], ids=str)
def test_fp4_pack_rounds(dtype: torch.dtype) -> None:
    """FP4 values are encoded with saturating round-to-nearest-even, sign kept."""
    grid = torch.tensor(ref.E2M1_GRID)
    mids = (grid[1:] + grid[:-1]) / 2
    v = torch.cat([grid, mids, mids + 0.01, mids - 0.01, torch.tensor([7.0, 1e9, float("inf")])])
    v = torch.cat([v, -v, torch.zeros(2)]).to(dtype)
    packed = ops.pack(v, torch.float4_e2m1fn_x2)
    assert torch.equal(packed, ref.pack(v, torch.float4_e2m1fn_x2))
    out = ops.unpack(packed, torch.float4_e2m1fn_x2)
    assert out.dtype == torch.float32
    want = ref.round_e2m1(torch.clamp(v.float(), -6, 6))
    assert torch.equal(out, want)
    assert torch.equal(torch.signbit(out), torch.signbit(want))


def test_fp4_round_trip_matches_fake_quantize() -> None:
    """unpack(pack(x)) equals fake_quantize_float(x, 1, fp4)."""
    x = torch.randn(8, 32) * 3
    out = ops.unpack(ops.pack(x, torch.float4_e2m1fn_x2), torch.float4_e2m1fn_x2)
    assert torch.equal(out, ops.fake_quantize_float(x, torch.tensor(1.0), torch.float4_e2m1fn_x2))


def test_non_contiguous() -> None:
    q = int_codes(torch.int4, (10, 8), torch.int8)
    qt = q.t()
    assert torch.equal(ops.pack(qt, torch.int4), ref.pack(qt.contiguous(), torch.int4))
    packed = ops.pack(q, torch.int4)[:, :2]
    assert torch.equal(ops.unpack(packed.t(), torch.int4), ref.unpack(packed.t(), torch.int4))


@pytest.mark.parametrize("dtype", INT_PACKED, ids=str)
def test_out_of_range_values_are_refused(dtype: torch.dtype) -> None:
    bits, signed = ref.INT_DTYPES[dtype]
    lo, hi = ref.int_range(bits, signed)
    for bad in (hi + 1, lo - 1):
        q = torch.zeros(8, dtype=torch.int32)
        q[5] = bad
        with pytest.raises(ValueError, match=rf"value {bad} at flat index 5 does not fit"):
            ops.pack(q, dtype)


@pytest.mark.parametrize("dtype", [*INT_PACKED, torch.float4_e2m1fn_x2], ids=str)
def test_last_dim_must_divide(dtype: torch.dtype) -> None:
    per_byte = 8 // ref.PACK_BITS[dtype]
    q = torch.zeros(3, per_byte + 1)
    if dtype != torch.float4_e2m1fn_x2:
        q = q.to(torch.int8)
    with pytest.raises(ValueError, match=rf"last dimension \({per_byte + 1}\) must be a multiple"):
        ops.pack(q, dtype)


def test_pack_errors() -> None:
    with pytest.raises(ValueError, match="FP4 has no NaN code"):
        ops.pack(torch.tensor([1.0, float("nan")]), torch.float4_e2m1fn_x2)
    with pytest.raises(TypeError, match="integer formats take an integer tensor"):
        ops.pack(torch.zeros(4), torch.int4)
    with pytest.raises(TypeError, match="floating-point tensor"):
        ops.pack(torch.zeros(4, dtype=torch.int8), torch.float4_e2m1fn_x2)
    with pytest.raises(ValueError, match=r"allowed: torch\.int4"):
        ops.pack(torch.zeros(4, dtype=torch.int8), torch.int8)
    with pytest.raises(ValueError, match="at least one dimension"):
        ops.pack(torch.tensor(1, dtype=torch.int8), torch.int4)


def test_unpack_errors() -> None:
    with pytest.raises(TypeError, match=r"packed must be torch\.uint8"):
        ops.unpack(torch.zeros(4, dtype=torch.int8), torch.int4)
    with pytest.raises(ValueError, match=r"allowed: torch\.int4"):
        ops.unpack(torch.zeros(4, dtype=torch.uint8), torch.float8_e4m3fn)
    with pytest.raises(ValueError, match="at least one dimension"):
        ops.unpack(torch.tensor(1, dtype=torch.uint8), torch.int4)
