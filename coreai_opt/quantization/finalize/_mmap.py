"""``finalize(mmap_dir=...)``: quantized weights written to safetensors files and mapped back.

Core AI finalize (both modes) can keep the quantized weights out of anonymous memory:
each weight's codes and qparams are written to one safetensors file in *mmap_dir* and the
model's tensors are replaced by the file's tensors, which ``safetensors.safe_open`` maps
into memory (``mmap``, private copy-on-write): their pages are read from the file on first
use and the kernel can drop them again under memory pressure.

File names (behaviour §12): eager mode ``<module>.<param>.safetensors`` (the module owning
the weight, ``<param>.safetensors`` for the root's own weights); graph mode ``<weight target
with . -> _>.safetensors``. A tied weight (one fake-quantizer, one dequantize module or one
set of buffers) is written once, under its first name.

safetensors has no ``float8_e8m0fnu`` / ``float4_e2m1fn_x2`` dtypes and no tensor
subclasses: such tensors are stored as their bytes (``uint8``) with the original form in
the file's metadata, and restored as views of the mapped bytes (coreai-torch's
``Float4Tensor`` wraps the mapped bytes again).
"""

from __future__ import annotations

import os
import re
from collections.abc import Mapping
from pathlib import Path

import torch
from safetensors import safe_open
from safetensors.torch import save_file
from torch import fx

from coreai_opt.quantization.finalize._export_ops import ExportOps, coreai_torch_available

__all__ = ["check_mmap_dir", "map_graph_weights", "map_tensors", "open_mmap_dir"]

_FLOAT4_TENSOR = "coreai_torch.Float4Tensor"
# dtypes safetensors cannot name: stored as their bytes and viewed back.
_BYTE_VIEWS = {str(d): d for d in (torch.float8_e8m0fnu, torch.float4_e2m1fn_x2)}
_QUANTIZED_SUFFIX = re.compile(r"_quantized(_\d+)?$")


def check_mmap_dir(mmap_dir: str | os.PathLike[str]) -> Path:
    """*mmap_dir* as a ``Path``, refused unless it is absent or an empty directory (it
    is created later, by :func:`open_mmap_dir`).

    Raises:
        TypeError: *mmap_dir* is not a str or path-like object.
        NotADirectoryError: it exists and is not a directory.
        FileExistsError: it is a directory that is not empty.
    """
    if not isinstance(mmap_dir, (str, os.PathLike)):
        raise TypeError(
            f"mmap_dir must be a str or os.PathLike (a directory path), got "
            f"{type(mmap_dir).__name__}"
        )
    path = Path(mmap_dir)
    if path.exists() and not path.is_dir():
        raise NotADirectoryError(
            f"mmap_dir={str(path)!r} exists and is not a directory; pass a new or empty "
            f"directory for the weight files"
        )
    if path.is_dir() and any(path.iterdir()):
        raise FileExistsError(
            f"mmap_dir={str(path)!r} is not empty; pass a new or empty directory (finalize "
            f"writes one .safetensors file per weight and never overwrites files)"
        )
    return path


def open_mmap_dir(mmap_dir: str | os.PathLike[str]) -> Path:
    """Check *mmap_dir* (:func:`check_mmap_dir`) and create it (with its parents)."""
    path = check_mmap_dir(mmap_dir)
    path.mkdir(parents=True, exist_ok=True)
    return path


def _is_float4_tensor(tensor: torch.Tensor) -> bool:
    if type(tensor) is torch.Tensor or not coreai_torch_available():
        return False
    from coreai_torch._compression._floatx import Float4Tensor

    return isinstance(tensor, Float4Tensor)


def _encode(tensor: torch.Tensor) -> tuple[torch.Tensor, str | None]:
    """(what safetensors stores, the form to restore, or None for a plain tensor)."""
    if _is_float4_tensor(tensor):
        return tensor.elem.detach().contiguous(), _FLOAT4_TENSOR  # type: ignore[attr-defined]
    if str(tensor.dtype) in _BYTE_VIEWS:
        return tensor.detach().contiguous().view(torch.uint8), str(tensor.dtype)
    return tensor.detach().contiguous(), None


def _decode(tensor: torch.Tensor, form: str | None) -> torch.Tensor:
    if form is None:
        return tensor
    if form == _FLOAT4_TENSOR:
        from coreai_torch._compression._floatx import Float4Tensor

        return Float4Tensor(tensor)
    return tensor.view(_BYTE_VIEWS[form])


def map_tensors(path: Path, tensors: Mapping[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """Write *tensors* to the safetensors file *path* and return them read back through
    ``mmap`` (same names, dtypes, shapes and values; the storage is the mapped file).

    Raises:
        FileExistsError: *path* exists.
        ValueError: a tensor is not on the CPU.
    """
    if path.exists():
        raise FileExistsError(f"{str(path)!r} exists; finalize never overwrites a weight file")
    plain: dict[str, torch.Tensor] = {}
    forms: dict[str, str] = {}
    for name, tensor in tensors.items():
        if tensor.device.type != "cpu":
            raise ValueError(
                f"mmap_dir: tensor {name!r} is on {tensor.device}, only CPU tensors can be "
                f"written and mapped; move the model with .cpu() first"
            )
        stored, form = _encode(tensor)
        plain[name] = stored
        if form is not None:
            forms[name] = form
    save_file(plain, str(path), metadata=forms or None)
    out: dict[str, torch.Tensor] = {}
    with safe_open(str(path), framework="pt", device="cpu") as f:
        metadata = f.metadata() or {}
        for name in tensors:
            out[name] = _decode(f.get_tensor(name), metadata.get(name))
    return out


def map_graph_weights(gm: fx.GraphModule, ops: ExportOps, mmap_dir: Path) -> list[Path]:
    """Write the buffers of every ``blockwise_shift_scale`` node of the finalized *gm* to
    ``<mmap_dir>/<weight target with . -> _>.safetensors`` and replace them by the mapped
    tensors. A buffer set read by several nodes (a tied weight) is written once.

    Returns the files written, in graph order.
    """
    written: list[Path] = []
    seen: set[str] = set()
    for node in gm.graph.nodes:
        if node.op != "call_function" or node.target not in (
            ops.blockwise_shift_scale,
            ops.blockwise_shift_scale.default,
        ):
            continue
        names = [
            str(arg.target)
            for arg in node.args[:4]
            if isinstance(arg, fx.Node) and arg.op == "get_attr"
        ]
        if not names or names[0] in seen:
            continue
        seen.add(names[0])
        stem = _QUANTIZED_SUFFIX.sub("", names[0])
        path = mmap_dir / f"{stem}.safetensors"
        mapped = map_tensors(path, {name: getattr(gm, name) for name in names})
        for name, tensor in mapped.items():
            gm._buffers[name] = tensor
        written.append(path)
    return written
