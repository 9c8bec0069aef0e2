"""Granularities: block sizes, axis rules, dict form, registry."""

from __future__ import annotations

import pydantic
import pytest

from coreai_opt.quantization.spec import (
    PerBlockGranularity,
    PerChannelGranularity,
    PerTensorGranularity,
    QuantizationGranularity,
)
from coreai_opt.quantization.spec.errors import _BlockSizeMismatchError


def test_per_tensor() -> None:
    g = PerTensorGranularity()
    assert g.get_block_size((4, 6, 3)) == (4, 6, 3)
    assert g.get_qparams_shape((4, 6, 3)) == (1, 1, 1)
    assert g.model_dump() == {"axis": None, "type": "per_tensor"}


@pytest.mark.parametrize(
    ("axis", "shape", "block", "qshape"),
    [
        (0, (8, 4, 3, 3), (1, 4, 3, 3), (8, 1, 1, 1)),
        (1, (4, 8, 3, 3), (4, 1, 3, 3), (1, 8, 1, 1)),
        (-1, (4, 5), (4, 1), (1, 5)),
        (-2, (4, 5), (1, 5), (4, 1)),
    ],
)
def test_per_channel(axis: int, shape: tuple, block: tuple, qshape: tuple) -> None:
    g = PerChannelGranularity(axis=axis)
    assert g.get_block_size(shape) == block
    assert g.get_qparams_shape(shape) == qshape


def test_per_channel_errors() -> None:
    with pytest.raises(ValueError, match=r"axis is None.*resolved"):
        PerChannelGranularity().get_block_size((4, 4))
    with pytest.raises(ValueError, match=r"axis=2 is out of range.*rank 2.*-2\.\.1"):
        PerChannelGranularity(axis=2).get_block_size((4, 4))
    with pytest.raises(pydantic.ValidationError, match=r"axis"):
        PerChannelGranularity(axis=True)


@pytest.mark.parametrize(
    ("axis", "shape", "block", "qshape"),
    [
        (1, (16, 64), (1, 32), (16, 2)),
        (0, (64, 16), (32, 1), (2, 16)),
        (1, (8, 64, 3, 3), (1, 32, 3, 3), (8, 2, 1, 1)),
        (0, (64,), (32,), (2,)),
    ],
)
def test_per_block_int(axis: int, shape: tuple, block: tuple, qshape: tuple) -> None:
    g = PerBlockGranularity(axis=axis, block_size=32)
    assert g.get_block_size(shape) == block
    assert g.get_qparams_shape(shape) == qshape


def test_per_block_tuple() -> None:
    g = PerBlockGranularity(block_size=(2, -1, 4))
    assert g.get_block_size((4, 6, 8)) == (2, 6, 4)
    assert g.get_qparams_shape((4, 6, 8)) == (2, 1, 2)
    assert PerBlockGranularity(block_size=[1, -1]).block_size == (1, -1)


def test_per_block_errors() -> None:
    with pytest.raises(_BlockSizeMismatchError, match=r"block size 32 does not divide dimension 1"):
        PerBlockGranularity(axis=1, block_size=32).get_block_size((4, 48))
    assert issubclass(_BlockSizeMismatchError, ValueError)
    with pytest.raises(_BlockSizeMismatchError):
        PerBlockGranularity(block_size=(3, -1)).get_block_size((4, 4))
    with pytest.raises(ValueError, match=r"axis is None"):
        PerBlockGranularity(block_size=32).get_block_size((4, 64))
    with pytest.raises(ValueError, match=r"axis=1 is out of range"):
        PerBlockGranularity(axis=1, block_size=2).get_block_size((4,))
    with pytest.raises(ValueError, match=r"2 entries but the tensor has rank 3"):
        PerBlockGranularity(block_size=(2, 2)).get_block_size((4, 4, 4))
    with pytest.raises(pydantic.ValidationError, match=r"block_size=0 must be a positive int"):
        PerBlockGranularity(block_size=0)
    with pytest.raises(pydantic.ValidationError, match=r"entries \[-2\].*-1 \(whole dimension\)"):
        PerBlockGranularity(block_size=(4, -2))
    with pytest.raises(
        pydantic.ValidationError, match=r"tuple block_size=\(4, 4\) takes axis=None"
    ):
        PerBlockGranularity(axis=0, block_size=(4, 4))
    with pytest.raises(pydantic.ValidationError, match=r"axis"):
        PerBlockGranularity(axis="1", block_size=4)
    with pytest.raises(ValueError, match=r"axis=3 is out of range .* allowed axes: -3..2"):
        PerBlockGranularity(axis=3, block_size=4).get_block_size((4, 4, 4))
    with pytest.raises(pydantic.ValidationError, match=r"block_size"):
        PerBlockGranularity()


def test_dict_form_and_type_key() -> None:
    g = PerBlockGranularity(axis=1, block_size=16)
    assert g.model_dump() == {"axis": 1, "block_size": 16, "type": "per_block"}
    assert QuantizationGranularity.from_dict(g.model_dump()) == g
    assert PerBlockGranularity(**g.model_dump()) == g
    with pytest.raises(pydantic.ValidationError, match=r"'per_tensor' does not match"):
        PerBlockGranularity(type="per_tensor", block_size=4)
    with pytest.raises(pydantic.ValidationError, match=r"frozen"):
        g.axis = 0  # type: ignore[misc]


def test_custom_granularity_registration() -> None:
    @QuantizationGranularity.register("test_rows")
    class Rows(QuantizationGranularity):
        def get_block_size(self, shape):
            return (1, *shape[1:])

    try:
        g = QuantizationGranularity.from_dict({"type": "test_rows"})
        assert isinstance(g, Rows)
        assert g.get_qparams_shape((3, 4)) == (3, 1)
        assert g.model_dump() == {"type": "test_rows"}
    finally:
        QuantizationGranularity.REGISTRY.pop("test_rows")
