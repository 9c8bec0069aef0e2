"""One side of benchmarks/vs_reference.py: runs inside either environment, as a black box.

Started by vs_reference.py with the same work directory, per execution mode (``--mode
graph`` or ``eager``): once with this project's ``.venv`` python and the repository on
``PYTHONPATH`` (ours), once with the reference's virtual environment (coreai-opt 0.3.0 over
torchao). Only the public API documented in ``shared/reference/*.md`` is used, so the same
code drives both: ``Quantizer``, ``QuantizerConfig`` (its presets and ``execution_mode``),
``ModuleQuantizerConfig``, ``QATSchedule``, ``prepare`` / ``calibration_mode`` /
``training_mode`` / ``step``, and of each fake-quantize module ``calculate_qparams()`` and
``tensor_fqn``.

Graph mode finds the fake-quantizers as ``call_module`` nodes of the GraphModule; eager mode
by the documented names of the submodules both libraries insert: ``<module>.<op>_quantize_*``
(activations) and ``<module>.parametrizations.<name>.<k>`` (weights).

Reads ``data.pt`` and ``float_<model>.pt`` from the work directory (written by the driver),
writes ``<side>-<mode>.pt``: per model and config the prepare times, the fake-quantizers
(what each quantizes, its qparams), the state_dict keys (eager), the test-set outputs and
the forward / QAT step timings.
"""

from __future__ import annotations

import argparse
import copy
import statistics
import sys
import time
import warnings
from collections.abc import Callable
from pathlib import Path
from typing import Any

import torch
from torch import fx, nn

sys.path.insert(0, str(Path(__file__).resolve().parent))
from bench_models import PreLNBlock, SmallCNN

import coreai_opt
from coreai_opt.quantization import (
    ModuleQuantizerConfig,
    Quantizer,
    QuantizerConfig,
)
from coreai_opt.quantization.config import QATSchedule

REPO = Path(__file__).resolve().parent.parent
CONFIGS = ("W8", "W4 per-block 32", "W8A8 calibrated", "W8A8 QAT 1 epoch")
CALIBRATION_BATCHES = 4


MODES = ("graph", "eager")


def make_config(name: str, mode: str = "graph") -> QuantizerConfig:
    """The QuantizerConfig of a config row in *mode*, built from what both libraries document
    (the presets take ``execution_mode`` as a keyword)."""
    if name == "W8":
        return QuantizerConfig.presets.w8(execution_mode=mode)
    if name == "W4 per-block 32":
        return QuantizerConfig.presets.w4_per_block(block_size=32, execution_mode=mode)
    if name == "W8A8 calibrated":
        return QuantizerConfig(execution_mode=mode)
    if name == "W8A8 QAT 1 epoch":
        return QuantizerConfig(
            global_config=ModuleQuantizerConfig(qat_schedule=QATSchedule()), execution_mode=mode
        )
    raise ValueError(f"unknown config {name!r}; expected one of {CONFIGS}")


def model_inputs(name: str, data: dict[str, Any], split: str) -> torch.Tensor:
    """The model's input for a split, built from the raw digits with fixed tensors.

    SmallCNN: the 8x8 digit scaled to [0, 1], nearest-upsampled to 16x16, three channels.
    PreLNBlock: each of the 64 pixels a token, value x a fixed direction + a fixed position
    embedding (width 256).
    """
    pixels = data[f"{split}_x"]  # N x 64 in [0, 1]
    if name == "SmallCNN":
        img = pixels.view(-1, 1, 8, 8)
        img = nn.functional.interpolate(img, scale_factor=2, mode="nearest")
        return img.expand(-1, 3, -1, -1).contiguous()
    return pixels.unsqueeze(-1) * data["embed_value"] + data["embed_position"]


def readout(name: str, out: torch.Tensor) -> torch.Tensor:
    """Class logits from a model output (the block: mean over tokens of 10 features)."""
    return out if name == "SmallCNN" else out.mean(dim=1)[:, :10]


def build(name: str) -> nn.Module:
    """A fresh benchmark model."""
    return SmallCNN() if name == "SmallCNN" else PreLNBlock()


def batch_size(name: str) -> int:
    """The benchmark models' batch sizes (bench_models.example_input)."""
    return 32 if name == "SmallCNN" else 16


def describe(node: fx.Node) -> str:
    """A node named as both graphs name it: placeholders and outputs by role."""
    if node.op == "placeholder":
        return f"input:{node.name}"
    if node.op == "output":
        return "output"
    return node.name


def is_fq_node(node: fx.Node) -> bool:
    """Whether a node calls one of the inserted fake-quantize modules."""
    return node.op == "call_module" and str(node.target).startswith("activation_post_process_")


WEIGHTED_OPS = ("conv1d", "conv2d", "conv3d", "linear", "embedding")


def op_kind(node: fx.Node) -> str:
    """The aten op's short name of a call_function node (``conv2d``, ``linear``, ...)."""
    return str(getattr(node.target, "__name__", node.target)).split(".")[0]


def weight_slots(gm: fx.GraphModule) -> dict[fx.Node, str]:
    """FQ nodes read as the weight (argument 1) of a conv / linear / embedding.

    Named ``<op>#<k>.weight`` with k the op's rank among ops of its kind in topological
    order, so the two graphs agree even where the reference's conv-bn rewrite renames nodes.
    """
    counts: dict[str, int] = {}
    slots = {}
    for node in gm.graph.nodes:
        if node.op != "call_function" or op_kind(node) not in WEIGHTED_OPS:
            continue
        kind = op_kind(node)
        k = counts.get(kind, 0)
        counts[kind] = k + 1
        if len(node.args) > 1 and isinstance(node.args[1], fx.Node) and is_fq_node(node.args[1]):
            slots[node.args[1]] = f"{kind}#{k}.weight"
    return slots


def fq_table(gm: fx.GraphModule) -> list[dict[str, Any]]:
    """Every FQ node of a prepared GraphModule: what it quantizes and its qparams.

    Weights are named by ``tensor_fqn`` (the parameter), else by the get_attr target.
    Activations by their producer (``node.args[0]``) and consumers (the FQ node's users).
    ``slot`` names the weight slot it feeds (see weight_slots); ``module`` is the FQ
    module's first node name, so nodes calling one shared module can be told apart.
    """
    rows = []
    slots = weight_slots(gm)
    first_node_of: dict[int, str] = {}
    for node in gm.graph.nodes:
        if not is_fq_node(node):
            continue
        fq = gm.get_submodule(str(node.target))
        src = node.args[0]
        fqn = getattr(fq, "tensor_fqn", None)
        consumers = sorted(describe(u) for u in node.users)
        if fqn and fqn != "<unknown>":
            kind, key = "weight", str(fqn)
        elif isinstance(src, fx.Node) and src.op == "get_attr":
            kind, key = "weight", str(src.target)
        else:
            kind = "activation"
            producer = describe(src) if isinstance(src, fx.Node) else repr(src)
            key = f"{producer} -> {', '.join(consumers)}"
        scale, zp = _qparams(fq, str(node.target))
        first_node_of.setdefault(id(fq), str(node.target))
        rows.append(
            {
                "name": str(node.target),
                "module": first_node_of[id(fq)],
                "slot": slots.get(node, ""),
                "tensor_fqn": str(fqn),
                "kind": kind,
                "key": key,
                "producer": describe(src) if isinstance(src, fx.Node) else repr(src),
                "consumers": consumers,
                "dtype": str(getattr(fq, "dtype", "?")),
                "granularity": str(getattr(fq, "granularity", "?")),
                "scale": scale,
                "zero_point": zp,
            }
        )
    return rows


def _qparams(fq: nn.Module, name: str) -> tuple[torch.Tensor | None, torch.Tensor | None]:
    """``(scale, zero_point)`` of a fake-quantize module (None, None when it has none)."""
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            qp = fq.calculate_qparams()
        scale = qp[0].detach().float().clone() if qp[0] is not None else None
        zp = qp[1].detach().clone() if len(qp) > 1 and qp[1] is not None else None
    except Exception as exc:  # a dropped / disabled FQ has no qparams
        scale, zp = None, None
        print(f"    qparams of {name}: {type(exc).__name__}: {exc}", flush=True)
    return scale, zp


def is_eager_fq_name(name: str) -> bool:
    """Whether a submodule path names an eager fake-quantizer: ``<op>_quantize_<arg>`` /
    ``<op>_quantize_output_<i>`` (activations) or ``parametrizations.<name>.<k>`` (weights)."""
    parts = name.split(".")
    if "_quantize_" in parts[-1]:
        return True
    return len(parts) >= 3 and parts[-3] == "parametrizations" and parts[-1].isdigit()


def eager_fq_table(model: nn.Module) -> list[dict[str, Any]]:
    """Every fake-quantizer of an eager-prepared model, keyed by its submodule path (both
    libraries name them the same way, so the path is what they quantize)."""
    rows = []
    for name, fq in model.named_modules():
        if not name or not is_eager_fq_name(name) or not hasattr(fq, "calculate_qparams"):
            continue
        weight = ".parametrizations." in f".{name}"
        scale, zp = _qparams(fq, name)
        owner, _, _ = name.rpartition(".")
        rows.append(
            {
                "name": name,
                "module": name,
                "slot": "",
                "tensor_fqn": str(getattr(fq, "tensor_fqn", None)),
                "kind": "weight" if weight else "activation",
                "key": name,
                "producer": owner,
                "consumers": [],
                "dtype": str(getattr(fq, "dtype", "?")),
                "granularity": str(getattr(fq, "granularity", "?")),
                "scale": scale,
                "zero_point": zp,
            }
        )
    return rows


def fake_quantizer_table(model: nn.Module) -> list[dict[str, Any]]:
    """:func:`fq_table` of a GraphModule, :func:`eager_fq_table` of an eager model."""
    if isinstance(model, fx.GraphModule):
        return fq_table(model)
    return eager_fq_table(model)


def median_times(fns: dict[str, Callable[[], object]], rounds: int, warmup: int = 5) -> dict:
    """Median seconds per call, interleaved round-robin after a warm-up."""
    for _ in range(warmup):
        for fn in fns.values():
            fn()
    times: dict[str, list[float]] = {k: [] for k in fns}
    names = list(fns)
    for r in range(rounds):
        for k in names[r % len(names) :] + names[: r % len(names)]:
            t0 = time.perf_counter()
            fns[k]()
            times[k].append(time.perf_counter() - t0)
    return {k: statistics.median(v) for k, v in times.items()}


def predict(name: str, model: nn.Module, x: torch.Tensor) -> torch.Tensor:
    """Class logits over a whole split, in batches, eval and no_grad."""
    bs = batch_size(name)
    with torch.no_grad():
        return torch.cat([readout(name, model(x[i : i + bs])) for i in range(0, len(x), bs)])


def qat_epoch(
    name: str,
    quantizer: Quantizer,
    prepared: nn.Module,
    x: torch.Tensor,
    y: torch.Tensor,
    seed: int,
) -> list[float]:
    """One QAT epoch (training_mode, SGD, step() per batch); seconds per step."""
    opt = torch.optim.SGD(prepared.parameters(), lr=0.01, momentum=0.9)
    bs = batch_size(name)
    order = torch.randperm(len(x), generator=torch.Generator().manual_seed(seed))
    times = []
    with quantizer.training_mode(prepared):
        for i in range(0, len(x) - bs + 1, bs):
            idx = order[i : i + bs]
            t0 = time.perf_counter()
            opt.zero_grad(set_to_none=True)
            loss = nn.functional.cross_entropy(readout(name, prepared(x[idx])), y[idx])
            loss.backward()
            opt.step()
            quantizer.step()
            times.append(time.perf_counter() - t0)
    return times


def interleaved_steps(
    name: str,
    quantizer: Quantizer,
    float_model: nn.Module,
    prepared: nn.Module,
    x: torch.Tensor,
    y: torch.Tensor,
    rounds: int,
) -> dict[str, float]:
    """Median SGD step of the float model and QAT step of the prepared one, interleaved."""
    f_opt = torch.optim.SGD(float_model.parameters(), lr=1e-4)
    p_opt = torch.optim.SGD(prepared.parameters(), lr=1e-4)

    def step(model: nn.Module, opt: torch.optim.Optimizer, qat: bool) -> None:
        opt.zero_grad(set_to_none=True)
        nn.functional.cross_entropy(readout(name, model(x)), y).backward()
        opt.step()
        if qat:
            quantizer.step()

    float_model.train()
    with quantizer.training_mode(prepared):
        return median_times(
            {
                "float": lambda: step(float_model, f_opt, False),
                "prepared": lambda: step(prepared, p_opt, True),
            },
            rounds,
        )


def float_step_times(name: str, model: nn.Module, x: torch.Tensor, y: torch.Tensor) -> float:
    """Median seconds of the same SGD step on the float model (a copy)."""
    model = copy.deepcopy(model).train()
    opt = torch.optim.SGD(model.parameters(), lr=0.01, momentum=0.9)
    bs = batch_size(name)
    times = []
    for i in range(0, min(len(x), 30 * bs) - bs + 1, bs):
        t0 = time.perf_counter()
        opt.zero_grad(set_to_none=True)
        nn.functional.cross_entropy(readout(name, model(x[i : i + bs])), y[i : i + bs]).backward()
        opt.step()
        times.append(time.perf_counter() - t0)
    return statistics.median(times[3:])


def saved_bytes(name: str, model: nn.Module, x: torch.Tensor, y: torch.Tensor) -> int:
    """Bytes autograd keeps for backward over one training step of *model* on (x, y): the
    distinct storages of every tensor saved for backward (a storage saved twice counts
    once), whoever saved it (the model's own ops or its fake-quantizers)."""
    storages: dict[int, int] = {}

    def pack(t: torch.Tensor) -> torch.Tensor:
        storage = t.untyped_storage()
        storages[storage.data_ptr()] = storage.nbytes()
        return t

    x = x.clone()  # a slice of the data set would count the whole set's storage
    with torch.autograd.graph.saved_tensors_hooks(pack, lambda t: t):
        loss = nn.functional.cross_entropy(readout(name, model(x)), y)
    loss.backward()
    model.zero_grad(set_to_none=True)
    return sum(storages.values())


def run_model(name: str, work: Path, data: dict[str, Any], args: argparse.Namespace) -> dict:
    """All configs of one model."""
    float_model = build(name)
    float_model.load_state_dict(torch.load(work / f"float_{name}.pt"))
    float_model.eval()
    x_train = model_inputs(name, data, "train")
    x_test = model_inputs(name, data, "test")
    y_train = data["train_y"]
    bs = batch_size(name)
    example = x_train[:bs]
    result: dict[str, Any] = {"float_logits": predict(name, float_model, x_test)}
    result["float_step_s"] = float_step_times(name, float_model, x_train, y_train)
    result["float_saved_bytes"] = saved_bytes(
        name, copy.deepcopy(float_model).train(), x_train[:bs], y_train[:bs]
    )
    for cfg in CONFIGS:
        print(f"  {name} / {cfg}", flush=True)
        prepare_s = []
        caught: list[str] = []
        for rep in range(args.prepare_repeats):
            torch.manual_seed(0)
            model = copy.deepcopy(float_model)
            with warnings.catch_warnings(record=True) as w:
                warnings.simplefilter("always")
                quantizer = Quantizer(model, make_config(cfg, args.mode))
                t0 = time.perf_counter()
                prepared = quantizer.prepare((example,))
                prepare_s.append(time.perf_counter() - t0)
            if rep == 0:
                caught = sorted({f"{m.category.__name__}: {str(m.message)[:160]}" for m in w})
        row: dict[str, Any] = {"prepare_s": prepare_s, "warnings": caught}
        row["fqs_after_prepare"] = fake_quantizer_table(prepared)
        row["state_keys"] = sorted(prepared.state_dict())
        if cfg == "W8A8 calibrated":
            with quantizer.calibration_mode(prepared):
                for i in range(CALIBRATION_BATCHES):
                    prepared(x_train[i * bs : (i + 1) * bs])
        if cfg == "W8A8 QAT 1 epoch":
            row["qat_step_s"] = qat_epoch(name, quantizer, prepared, x_train, y_train, seed=1)
            row["params"] = {n: t.detach().clone() for n, t in prepared.named_parameters()}
            with quantizer.training_mode(prepared):
                row["qat_saved_bytes"] = saved_bytes(name, prepared, x_train[:bs], y_train[:bs])
        prepared.eval()
        row["fqs"] = fake_quantizer_table(prepared)
        row["logits"] = predict(name, prepared, x_test)
        f_model = copy.deepcopy(float_model).eval()
        xb = x_test[:bs]

        def f_call(m: nn.Module = f_model, xb: torch.Tensor = xb) -> None:
            with torch.no_grad():
                m(xb)

        def p_call(m: nn.Module = prepared, xb: torch.Tensor = xb) -> None:
            with torch.no_grad():
                m(xb)

        row["forward_s"] = median_times({"float": f_call, "prepared": p_call}, args.rounds)
        if cfg == "W8A8 QAT 1 epoch":
            row["qat_step_interleaved_s"] = interleaved_steps(
                name, quantizer, f_model, prepared, x_train[:bs], y_train[:bs], args.rounds
            )
        result[cfg] = row
    return result


def _dist_version(side: str) -> str:
    """The installed distribution's version (0.3.0's ``__version__`` still says 0.2.0)."""
    if side == "ours":
        return "this repository"
    from importlib.metadata import version

    return version("coreai-opt")


def main() -> None:
    """Runs every model and config and writes ``<side>.pt`` to the work directory."""
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--work", type=Path, required=True)
    parser.add_argument("--side", choices=("ours", "reference"), required=True)
    parser.add_argument("--mode", choices=MODES, default="graph")
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--rounds", type=int, default=20)
    parser.add_argument("--prepare-repeats", type=int, default=3)
    args = parser.parse_args()
    here = Path(coreai_opt.__file__).resolve().is_relative_to(REPO / "coreai_opt")
    if here != (args.side == "ours"):  # the reference must not see this repository's package
        raise SystemExit(f"side {args.side}: imported the wrong coreai_opt package")
    torch.set_num_threads(args.threads)
    data = torch.load(args.work / "data.pt")
    out: dict[str, Any] = {
        "side": args.side,
        "mode": args.mode,
        "versions": {
            "coreai_opt": getattr(coreai_opt, "__version__", "?"),
            "dist": _dist_version(args.side),
            "torch": str(torch.__version__),
            "python": sys.version.split()[0],
        },
    }
    try:
        import torchao

        out["versions"]["torchao"] = str(torchao.__version__)
    except ImportError:
        out["versions"]["torchao"] = "-"
    v = out["versions"]
    print(
        f"[{args.side}, {args.mode}] coreai_opt {v['dist']} (__version__ {v['coreai_opt']})",
        flush=True,
    )
    for name in ("SmallCNN", "PreLNBlock"):
        out[name] = run_model(name, args.work, data, args)
    torch.save(out, args.work / f"{args.side}-{args.mode}.pt")


if __name__ == "__main__":
    main()
