"""``Quantizer.finalize(backend=CoreAI, mmap_dir=...)`` in both execution modes.

Each quantized weight is written to one safetensors file (eager ``<module>.<param>
.safetensors``, graph ``<weight target with . -> _>.safetensors``; a tied weight once) and
the model's codes and qparams are replaced by the file's tensors, mapped with ``mmap``:
the tests find each tensor's memory in ``/proc/self/maps`` as a mapping of its file.
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from pathlib import Path

import pytest
import torch
from finalize_helpers import A8, MLP, W8, WEIGHT_FORMATS, Tied, config, prepared
from safetensors import safe_open
from torch import nn

from coreai_opt import ExportBackend
from coreai_opt.quantization import ModuleQuantizerConfig, Quantizer, QuantizerConfig
from coreai_opt.quantization.finalize import _export_ops
from coreai_opt.quantization.spec import QuantizationSpec
from coreai_opt.quantization.spec.fake_quantize import FakeQuantizeImplBase

FORMATS = {fmt: spec for fmt, spec in WEIGHT_FORMATS}
MAPS = Path("/proc/self/maps")
needs_proc_maps = pytest.mark.skipif(
    not MAPS.exists(), reason="needs /proc/self/maps (Linux) to see file-backed memory"
)


# -- helpers -------------------------------------------------------------------------


class RootWeight(nn.Module):
    """The root owns a weight; a child owns another."""

    def __init__(self) -> None:
        super().__init__()
        self.weight = nn.Parameter(torch.randn(32, 64))
        self.head = nn.Linear(32, 8)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.head(torch.nn.functional.linear(x, self.weight))


def case(
    mode: str,
    weight: QuantizationSpec | None = W8,
    act: QuantizationSpec | None = A8,
    model: nn.Module | None = None,
    x: torch.Tensor | None = None,
) -> tuple[Quantizer, nn.Module, torch.Tensor, torch.Tensor]:
    """(quantizer, model prepared in *mode*, input, prepared output); default: the MLP."""
    torch.manual_seed(0)
    model = MLP() if model is None else model
    x = torch.randn(4, 64) if x is None else x
    if mode == "graph":
        q, gm, out = prepared(model, config(weight, act), x)
        return q, gm, x, out
    io_spec: Mapping[str, QuantizationSpec | None] = {"*": act}
    cfg = QuantizerConfig(
        execution_mode="eager",
        global_config=ModuleQuantizerConfig(
            op_state_spec={"weight": weight}, op_input_spec=io_spec, op_output_spec=io_spec
        ),
    )
    q = Quantizer(model.eval(), cfg)
    prepared_model = q.prepare((x,))
    with torch.no_grad():
        out = prepared_model(x)
    return q, prepared_model, x, out


def finalize(q: Quantizer, model: nn.Module, mmap_dir: str | os.PathLike[str]) -> nn.Module:
    with torch.no_grad():
        out = q.finalize(model, backend=ExportBackend.CoreAI, mmap_dir=mmap_dir)
    assert out is model
    return out


def run(model: nn.Module, x: torch.Tensor) -> torch.Tensor:
    with torch.no_grad():
        return model(x)


def backing_file(tensor: torch.Tensor) -> str | None:
    """The file whose mapping holds *tensor*'s memory (None: anonymous memory)."""
    if hasattr(tensor, "elem"):  # coreai-torch's Float4Tensor wraps the packed bytes
        tensor = tensor.elem
    address = tensor.untyped_storage().data_ptr()
    for line in MAPS.read_text().splitlines():
        fields = line.split(maxsplit=5)
        lo, hi = (int(v, 16) for v in fields[0].split("-"))
        if lo <= address < hi:
            path = fields[5].strip() if len(fields) == 6 else ""
            return path if path.startswith("/") else None
    return None


def weight_tensors(model: nn.Module, mode: str) -> dict[str, dict[str, torch.Tensor]]:
    """The stored form of each weight: eager by owner (dequantize buffers), graph by
    buffer prefix (root buffers ``<prefix>_quantized`` ...)."""
    if mode == "eager":
        out: dict[str, dict[str, torch.Tensor]] = {}
        for name, module in model.named_modules():
            if name.endswith(".parametrizations.weight.0") or name == "parametrizations.weight.0":
                out[name.rpartition(".parametrizations.")[0] or ""] = dict(module.named_buffers())
        return out
    grouped: dict[str, dict[str, torch.Tensor]] = {}
    for name, buf in model.named_buffers():
        for suffix in ("_quantized", "_scale", "_zero_point", "_minval"):
            if name.endswith(suffix) and "_weight" in name:
                grouped.setdefault(name[: -len(suffix)], {})[name] = buf
    return grouped


# -- file names, mapping, outputs ----------------------------------------------------


@needs_proc_maps
@pytest.mark.parametrize(
    ("mode", "files"),
    [
        ("eager", {"a.weight.safetensors": "a", "sub.1.weight.safetensors": "sub.1"}),
        ("graph", {"a_weight.safetensors": "a_weight", "sub_1_weight.safetensors": "sub_1_weight"}),
    ],
)
def test_one_file_per_weight_mapped_back(mode: str, files: dict[str, str], tmp_path: Path) -> None:
    q, model, x, ref = case(mode)
    target = tmp_path / "weights"
    f = finalize(q, model, target)
    assert sorted(p.name for p in target.iterdir()) == sorted(files)
    stored = weight_tensors(f, mode)
    for file_name, key in files.items():
        path = target / file_name
        tensors = stored[key]
        with safe_open(str(path), framework="pt") as handle:
            assert sorted(handle.keys()) == sorted(tensors)
            for name, tensor in tensors.items():
                assert torch.equal(handle.get_tensor(name), tensor)
        for name, tensor in tensors.items():
            assert backing_file(tensor) == str(path), name
    # no FQ left, dense weights freed, outputs as prepared
    assert not any(isinstance(m, FakeQuantizeImplBase) for m in f.modules())
    if mode == "eager":
        assert f.a.parametrizations.weight.original.shape == (0,)
    else:
        assert f.a.weight.shape == (0,)
    assert torch.equal(run(f, x), ref)


@needs_proc_maps
def test_eager_root_weight_file_is_named_by_the_parameter(tmp_path: Path) -> None:
    q, model, x, ref = case("eager", act=None, model=RootWeight())
    f = finalize(q, model, tmp_path)
    assert sorted(p.name for p in tmp_path.iterdir()) == [
        "head.weight.safetensors",
        "weight.safetensors",
    ]
    assert backing_file(f.parametrizations.weight[0].quantized_data) == str(
        tmp_path / "weight.safetensors"
    )
    assert torch.equal(run(f, x), ref)


@pytest.mark.parametrize("mode", ["eager", "graph"])
def test_a_tied_weight_is_written_once(mode: str, tmp_path: Path) -> None:
    q, model, x, ref = case(mode, model=Tied(), x=torch.randn(4, 16))
    f = finalize(q, model, tmp_path)
    if mode == "eager":
        stem = "a.weight"  # the first owner
        assert f.a.parametrizations.weight[0] is f.b.parametrizations.weight[0]
    else:
        # torch.export keeps one of the tied names as the graph's weight target
        (stem,) = weight_tensors(f, mode)
        assert stem in ("a_weight", "b_weight")
    assert [p.name for p in tmp_path.iterdir()] == [f"{stem}.safetensors"]
    assert torch.equal(run(f, x), ref)


@pytest.mark.parametrize("library", ["selected", "ours"])
@pytest.mark.parametrize("mode", ["eager", "graph"])
@pytest.mark.parametrize("fmt", ["int8", "int4_block_minval", "fp8_e4m3_e8m0", "mxfp4"])
def test_formats_round_trip_through_the_files(
    fmt: str, mode: str, library: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Dtypes safetensors cannot name (E8M0 scales, packed FP4) come back as views of the
    mapped bytes; every format gives the prepared output."""
    if library == "ours":
        if not hasattr(torch.ops.coreai_opt, "blockwise_shift_scale"):
            pytest.skip("needs this build's coreai_opt Core AI mirror ops")
        monkeypatch.setattr(_export_ops, "coreai_torch_available", lambda: False)
    q, model, x, ref = case(mode, weight=FORMATS[fmt], act=None)
    f = finalize(q, model, tmp_path)
    stored = weight_tensors(f, mode)
    assert len(stored) == 2
    for tensors in stored.values():
        scale = next(v for k, v in tensors.items() if k.endswith("scale"))
        e8m0 = fmt in ("fp8_e4m3_e8m0", "mxfp4")
        assert scale.dtype == (torch.float8_e8m0fnu if e8m0 else torch.float32)
    assert torch.equal(run(f, x), ref)


# -- errors --------------------------------------------------------------------------


def fq_count(model: nn.Module) -> int:
    return sum(isinstance(m, FakeQuantizeImplBase) for m in model.modules())


@pytest.mark.parametrize("mode", ["eager", "graph"])
def test_a_file_is_not_a_directory(mode: str, tmp_path: Path) -> None:
    q, model, x, ref = case(mode)
    path = tmp_path / "file"
    path.write_text("x")
    with pytest.raises(NotADirectoryError, match=r"mmap_dir=.*is not a directory"):
        q.finalize(model, backend=ExportBackend.CoreAI, mmap_dir=str(path))
    assert fq_count(model) and torch.equal(run(model, x), ref)


@pytest.mark.parametrize("mode", ["eager", "graph"])
def test_a_non_empty_directory_is_refused_before_any_change(mode: str, tmp_path: Path) -> None:
    q, model, x, ref = case(mode)
    (tmp_path / "a.weight.safetensors").write_text("old")
    with pytest.raises(FileExistsError, match=r"is not empty"):
        q.finalize(model, backend=ExportBackend.CoreAI, mmap_dir=tmp_path)
    assert fq_count(model) and torch.equal(run(model, x), ref)
    assert (tmp_path / "a.weight.safetensors").read_text() == "old"


@pytest.mark.parametrize("mode", ["eager", "graph"])
@pytest.mark.parametrize("backend", [ExportBackend.CoreML, ExportBackend._TORCH])
def test_mmap_dir_needs_the_coreai_backend(
    mode: str, backend: ExportBackend, tmp_path: Path
) -> None:
    q, model, _, _ = case(mode)
    with pytest.raises(
        ValueError,
        match=rf"only supported with backend=ExportBackend.CoreAI.*backend='{backend.value}'",
    ):
        q.finalize(model, backend=backend, mmap_dir=tmp_path)
    assert fq_count(model) and not any(tmp_path.iterdir())


@pytest.mark.parametrize("mode", ["eager", "graph"])
def test_mmap_dir_needs_every_tensor_on_the_cpu(mode: str, tmp_path: Path) -> None:
    q, model, _, _ = case(mode)
    model.register_buffer("elsewhere", torch.empty(2, device="meta"))
    with pytest.raises(ValueError, match=r"on the CPU; found devices \['meta'\]"):
        q.finalize(model, backend=ExportBackend.CoreAI, mmap_dir=tmp_path)
    assert fq_count(model)


def test_mmap_dir_must_be_a_path(tmp_path: Path) -> None:
    q, model, _, _ = case("eager")
    with pytest.raises(TypeError, match=r"mmap_dir must be a str or os.PathLike"):
        q.finalize(model, backend=ExportBackend.CoreAI, mmap_dir=3)  # type: ignore[arg-type]


@pytest.mark.parametrize("mode", ["eager", "graph"])
def test_a_missing_directory_is_created_with_its_parents(mode: str, tmp_path: Path) -> None:
    q, model, x, ref = case(mode)
    target = tmp_path / "new" / "nested"
    f = finalize(q, model, str(target))
    assert target.is_dir() and len(list(target.iterdir())) == 2
    assert torch.equal(run(f, x), ref)
