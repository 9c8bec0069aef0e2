"""Model, data and configs shared by the distributed worker and the single-process checks.

Every scenario runs in both execution modes (``MODES``): graph (a ``GraphModule``) and
eager (the model itself, activation fake-quantizers as submodules, weights through
parametrizations); the helpers below hide where each mode keeps its tensors.
"""

from __future__ import annotations

import inspect

import torch
from torch import nn
from torch.nn.parallel import DistributedDataParallel

from coreai_opt.quantization import (
    ModuleQuantizerConfig,
    QuantizationSpec,
    Quantizer,
    QuantizerConfig,
)
from coreai_opt.quantization._lifecycle import fake_quantizers
from coreai_opt.quantization.config import ExecutionMode, QATSchedule
from coreai_opt.quantization.spec.granularity import PerTensorGranularity

WORLD_SIZE = 2
MODES = ("graph", "eager")

SYNCED = {"graph": 5, "eager": 6}
"""Fake-quantizers of the MLP a sync reduces: 2 weights + 3 activations in graph mode (the
relu between the linears shares one), 2 + 4 in eager mode (each linear's input and output,
no sharing, as in the reference's eager mode)."""

ACTIVATIONS = {"graph": 3, "eager": 4}
"""Activation fake-quantizers of the MLP (see ``SYNCED``)."""


class MLP(nn.Module):
    """fc1 → relu → fc2 (float weights from a fixed seed, so every rank starts equal)."""

    def __init__(self) -> None:
        super().__init__()
        torch.manual_seed(0)
        self.fc1 = nn.Linear(8, 16)
        self.fc2 = nn.Linear(16, 4)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.fc2(torch.relu(self.fc1(x)))


class ConvBn(nn.Module):
    """conv → bn → relu → pool → linear (the QAT conv-bn form keeps BN statistics)."""

    def __init__(self) -> None:
        super().__init__()
        torch.manual_seed(0)
        self.conv = nn.Conv2d(3, 4, 3, padding=1)
        self.bn = nn.BatchNorm2d(4)
        self.fc = nn.Linear(4, 2)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        y = torch.relu(self.bn(self.conv(x)))
        return self.fc(nn.functional.adaptive_avg_pool2d(y, 1).flatten(1))


def example_input() -> torch.Tensor:
    """The prepare input, the same on every rank."""
    return torch.randn(4, 8, generator=torch.Generator().manual_seed(1234)) * 0.1


def is_eager(quantizer: Quantizer) -> bool:
    """Whether *quantizer* prepares in eager mode."""
    return ExecutionMode(quantizer.config.execution_mode) is ExecutionMode.EAGER


def prepare(quantizer: Quantizer, conv: bool = False) -> nn.Module:
    """Prepare with the shared example input (graph mode: a dynamic batch dimension)."""
    example = conv_example_input() if conv else example_input()
    if is_eager(quantizer):
        return quantizer.prepare((example,))
    dynamic = ({0: torch.export.Dim.DYNAMIC},)
    return quantizer.prepare((example,), dynamic_shapes=dynamic)


def conv_example_input() -> torch.Tensor:
    """The prepare input of :class:`ConvBn`, the same on every rank."""
    return torch.randn(2, 3, 6, 6, generator=torch.Generator().manual_seed(4321))


def batches(rank: int, count: int, seed: int = 0, shape: tuple[int, ...] = (16, 8)) -> list:
    """*count* batches of rank *rank*'s shard: scale and offset grow with the rank."""
    gen = torch.Generator().manual_seed(1000 * seed + rank)
    return [torch.randn(*shape, generator=gen) * (1 + 2 * rank) + rank for _ in range(count)]


def targets(rank: int, count: int, out: int = 4, batch: int = 16) -> list:
    """Regression targets for rank *rank*'s QAT batches."""
    gen = torch.Generator().manual_seed(77 + rank)
    return [torch.randn(batch, out, generator=gen) for _ in range(count)]


def config(
    act_calculator: str = "moving_average",
    act_fq: str = "default",
    schedule: QATSchedule | None = None,
    mode: str = "graph",
) -> QuantizerConfig:
    """int8 weights (default) and asymmetric int8 per-tensor activations, in *mode*."""
    act = QuantizationSpec(
        dtype=torch.int8,
        qscheme="asymmetric",
        granularity=PerTensorGranularity(),
        qparam_calculator_cls=act_calculator,
        fake_quantize_cls=act_fq,
    )
    module = ModuleQuantizerConfig(
        op_input_spec={"*": act}, op_output_spec={"*": act}, qat_schedule=schedule
    )
    return QuantizerConfig(global_config=module, execution_mode=mode)


def ddp(model: nn.Module, sync_buffers: bool | None) -> DistributedDataParallel:
    """DDP around *model*; *sync_buffers* False = ``broadcast_buffers=False`` (called
    ``forward_sync_buffers`` from torch 2.13), None = DDP's default (True)."""
    if sync_buffers is None:
        return DistributedDataParallel(model)
    params = inspect.signature(DistributedDataParallel.__init__).parameters
    key = "forward_sync_buffers" if "forward_sync_buffers" in params else "broadcast_buffers"
    return DistributedDataParallel(model, **{key: sync_buffers})


def full_tensor(value: torch.Tensor) -> torch.Tensor:
    """A detached clone of *value*, all-gathered first when FSDP2 sharded it (a DTensor:
    a collective, every rank calls it in the same order)."""
    gather = getattr(value, "full_tensor", None)
    if callable(gather):
        value = gather()
    return value.detach().clone()


def full_state(model: nn.Module) -> dict[str, torch.Tensor]:
    """``model.state_dict()`` with every tensor whole (FSDP2 shards all-gathered), cloned."""
    return {k: full_tensor(v) for k, v in model.state_dict().items()}


def observer_state(model: nn.Module) -> dict[str, torch.Tensor]:
    """Every fake-quantizer tensor of *model* (ranges, qparams, LSQ parameters), cloned: the
    state_dict entries under a fake-quantizer's name (graph ``activation_post_process_<n>``,
    eager ``<module>.<op>_quantize_*`` and ``<module>.parametrizations.<name>.0``)."""
    prefixes = tuple(f"{name}." for name in fake_quantizers(model))
    return {k: full_tensor(v) for k, v in model.state_dict().items() if k.startswith(prefixes)}


def weight_key(state: dict[str, torch.Tensor], module: str) -> str:
    """The state_dict key of *module*'s float weight: ``<module>.weight`` (graph), or
    ``<module>.parametrizations.weight.original`` (eager)."""
    for key in (f"{module}.weight", f"{module}.parametrizations.weight.original"):
        if key in state:
            return key
    raise KeyError(f"no weight of {module!r} among {sorted(state)}")
