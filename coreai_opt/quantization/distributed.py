"""Observer synchronisation across a data-parallel group (``torch.distributed``).

Under data parallelism every rank observes its own shard of the data, so the running
ranges of the fake-quantizers (and the qparams computed from them) drift apart. This
module reduces them across the group at explicit points, never inside a forward (ranks
may take different branches, and a collective there would deadlock):

* when :func:`~coreai_opt.quantization._lifecycle.calibration_mode` (hence
  ``Quantizer.calibration_mode()`` / ``Quantizer.calibrate()``) exits normally;
* at ``Quantizer.step()``, before the ``QATSchedule`` advances (with or without a
  schedule);
* on demand through ``Quantizer.sync_observers()`` or :func:`sync_observers` (these
  ignore the automatic switch below).

``Quantizer.prepare()`` does not synchronise (its example inputs are usually the same on
every rank); the first calibration or ``step()`` does. The automatic sync (the first two
points) is on by default and runs only when
``torch.distributed.is_available() and torch.distributed.is_initialized()`` and the
group has more than one rank; otherwise nothing happens and no collective is issued.
Turn it off for the whole process with ``set_auto_sync(False)`` or for a block with
``with auto_sync(False): ...``; ``set_auto_sync(True, group=...)`` chooses the
data-parallel group (default: the default group).

What one sync does:

1. Collect the fake-quantizers whose qparams come from a running range (the rules
   below), in module order (the same on every rank for the same model).
2. One small all-reduce (MIN, 6 numbers) compares the layout (number of range elements
   and a CRC of every name and shape) so that ranks whose models differ all raise the
   same ``RuntimeError`` instead of crashing inside the backend.
3. One all-reduce (MIN) on a single flat float32 buffer holding every ``running_min``
   followed by every negated ``running_max`` (``min(-max) = -max(max)``, exact in IEEE
   arithmetic): the MIN and the MAX reductions travel in the same collective.
4. Each calculator writes the reduced range back and recomputes its ``scale`` /
   ``zero_point`` / ``minval`` from it with the C++ ops ``choose_qparams_int`` /
   ``choose_qparams_float`` (the formulas of the fused forward, bit for bit; see
   ``StatefulQParamsCalculatorBase.update_qparams_from_running_range``).

Rules:

* Uninitialised ranges are +inf / -inf ("nothing observed"), the identity of MIN / MAX,
  so a rank that never saw data takes the others' range and never poisons it. Elements
  still unobserved on every rank keep their stored qparams (the placeholders of a state
  that never saw data, the same on every rank).
* ``"static"`` calculators reduce the range of the last batch of every rank; with one
  calibration batch per rank (or ``"global_minmax"`` over any number of batches) the
  result equals a single-process calibration on the union of the data.
* ``"moving_average"`` calculators reduce their running averages the same way (MIN of
  the minima, MAX of the maxima), then recompute the qparams; later batches keep
  averaging from the reduced range.
* Stateless (``"dynamic"``) calculators store nothing and are skipped; so are
  fake-quantizers disabled by a block-size mismatch and calculators that do not derive
  from ``StatefulQParamsCalculatorBase`` (their qparams are not a function of a running
  range).
* ``fake_quantize_cls="lsq"``: the calculator's range is synchronised like any other.
  While the observer is on, the learnable ``scale`` / ``zero_point`` are being
  initialised from the calculator, so they are overwritten with the reduced qparams
  (every rank starts learning from the same values); once the observer is off they are
  trained parameters, kept identical by DDP's gradient averaging, and left alone.

``DistributedDataParallel``: wrap the prepared model with ``broadcast_buffers=False``
(``forward_sync_buffers=False`` from torch 2.13, which deprecates the former). With the
default ``True`` DDP copies rank 0's buffers — the observers' running ranges
and qparams — over every other rank's at each forward, so only rank 0's data would ever
be observed. :func:`check_ddp` warns about it, and :func:`sync_observers` (and
``Quantizer.sync_observers()``) call it when given the DDP wrapper. Other buffers, such as
BatchNorm running statistics, are then per rank as well;
:func:`broadcast_non_observer_buffers` copies rank 0's (what DDP would have done for them)
without touching the observers.

Both execution modes: the sync finds the fake-quantizers through ``named_modules()``, which
in eager mode reaches the activation fake-quantizers (submodules of the module that ran the
op) and the weight ones (``<module>.parametrizations.<name>.0``); a weight shared by several
modules has one fake-quantizer and is synchronised once. An eager model stays the module
DDP wraps, and DDP's buffer broadcast would reach its fake-quantizers' buffers exactly as
in graph mode, so the same ``broadcast_buffers=False`` rule and :func:`check_ddp` apply.

FSDP2 (``torch.distributed.fsdp.fully_shard``; ``torch.distributed._composable.fsdp`` on
torch < 2.6) over an **eager**-prepared model works, on CPU with gloo too, when it is
applied *after* ``Quantizer.prepare()``:

* FSDP2 shards parameters only: the weights' ``parametrizations.<name>.original`` and LSQ's
  ``scale`` / ``zero_point``. Fake-quantizer state is buffers, which it leaves whole and
  per rank and never broadcasts (there is no switch to turn off), so everything above
  applies unchanged; a weight fake-quantizer observes the all-gathered full weight, the
  same on every rank. Other buffers (BatchNorm statistics) stay per rank as under DDP with
  ``broadcast_buffers=False``: :func:`broadcast_non_observer_buffers` before finalizing.
* Sharding *before* prepare is not supported: eager prepare's recording forward would see
  the all-gathered weights as plain tensors, not parameters, and quantize them as
  activations, without an error. :func:`check_unsharded` raises ``RuntimeError`` for such
  a model (prepare itself does not call it yet).
* LSQ (``fake_quantize_cls="lsq"``) while its observer is on writes the calculator's
  qparams into its parameters inside the forward. Under FSDP2 the write lands in the
  unsharded copy, which a reshard drops: the sync (calibration exit, ``step()``) writes
  the reduced qparams into every rank's shard, locally. But a module group that reshards
  after forward (``reshard_after_forward=True``, FSDP2's default below the root) all-gathers
  the stale values again for the backward, which then differentiates with qparams other
  than those of the forward (DDP or one process would not). :func:`check_fsdp` (run by
  every sync) raises ``RuntimeError`` when a backward went through such a fake-quantizer;
  ``fully_shard(..., reshard_after_forward=False)`` (or ``set_reshard_after_forward(False)``)
  on the groups holding LSQ fake-quantizers while the observer is on gives the results of
  DDP. Once the observer is off the parameters are trained like any other.

Graph-mode (``GraphModule``) models are trained with DDP; FSDP2 over them is not covered.
"""

from __future__ import annotations

import contextlib
import warnings
import zlib
from collections.abc import Iterator
from dataclasses import dataclass

import torch
import torch.distributed as dist
from torch import nn

from coreai_opt.quantization.spec.fake_quantize import (
    FakeQuantizeImplBase,
    LearnableFakeQuantize,
)
from coreai_opt.quantization.spec.qparams_calculator import StatefulQParamsCalculatorBase

__all__ = [
    "auto_sync",
    "auto_sync_enabled",
    "broadcast_non_observer_buffers",
    "check_ddp",
    "check_fsdp",
    "check_unsharded",
    "is_distributed",
    "set_auto_sync",
    "sync_observers",
    "sync_observers_if_enabled",
    "syncable_fake_quantizers",
]

ProcessGroup = dist.ProcessGroup if dist.is_available() else object

try:
    from torch.distributed.tensor import DTensor as _DTensor
    from torch.distributed.tensor import distribute_tensor as _distribute_tensor
except ImportError:  # torch built without distributed support
    _DTensor = None  # type: ignore[assignment,misc]
    _distribute_tensor = None  # type: ignore[assignment]
try:
    from torch.distributed.fsdp import FSDPModule as _FSDPModule
except ImportError:  # torch < 2.6
    try:
        from torch.distributed._composable.fsdp import FSDPModule as _FSDPModule
    except ImportError:
        _FSDPModule = None  # type: ignore[assignment,misc]


@dataclass
class _AutoSync:
    enabled: bool = True
    group: ProcessGroup | None = None


_AUTO = _AutoSync()


# -- switches ---------------------------------------------------------------------------------


def set_auto_sync(enabled: bool, group: ProcessGroup | None = None) -> None:
    """Turn the automatic sync (calibration exit, ``Quantizer.step()``) on or off.

    Args:
        enabled: False stops every automatic sync of this process; explicit
            :func:`sync_observers` calls still work.
        group: the data-parallel process group used by the automatic sync (None: the
            default group).
    """
    if not isinstance(enabled, bool):
        raise TypeError(f"set_auto_sync(enabled=...) takes a bool, got {type(enabled).__name__}")
    _AUTO.enabled = enabled
    _AUTO.group = group


def auto_sync_enabled() -> bool:
    """True when the automatic observer sync is switched on (the default)."""
    return _AUTO.enabled


@contextlib.contextmanager
def auto_sync(enabled: bool, group: ProcessGroup | None = None) -> Iterator[None]:
    """Context manager: :func:`set_auto_sync` for the block, the previous state after it."""
    previous = (_AUTO.enabled, _AUTO.group)
    set_auto_sync(enabled, group)
    try:
        yield
    finally:
        _AUTO.enabled, _AUTO.group = previous


def is_distributed(group: ProcessGroup | None = None) -> bool:
    """True when ``torch.distributed`` is initialised and *group* has more than one rank."""
    if not (dist.is_available() and dist.is_initialized()):
        return False
    return dist.get_world_size(group) > 1


# -- DDP --------------------------------------------------------------------------------------


def _is_ddp(module: object) -> bool:
    return isinstance(module, nn.parallel.DistributedDataParallel)


def _has_fake_quantizers(module: nn.Module) -> bool:
    return any(isinstance(m, FakeQuantizeImplBase) for m in module.modules())


def _forward_syncs_buffers(ddp: nn.Module) -> bool:
    # torch >= 2.13 calls the switch forward_sync_buffers (broadcast_buffers is its
    # deprecated alias); older releases only have broadcast_buffers.
    if "forward_sync_buffers" in vars(ddp):
        return bool(vars(ddp)["forward_sync_buffers"])
    return bool(getattr(ddp, "broadcast_buffers", False))


def check_ddp(module: nn.Module) -> bool:
    """Warn when *module* is a ``DistributedDataParallel`` that broadcasts observer buffers.

    Returns False (after a ``UserWarning``) when *module* wraps fake-quantizers and
    copies rank 0's buffers at every forward (``broadcast_buffers=True``, DDP's default;
    ``forward_sync_buffers=True`` from torch 2.13); True otherwise, also for anything that
    is not DDP.
    """
    if not _is_ddp(module) or not _forward_syncs_buffers(module):
        return True
    if not _has_fake_quantizers(module):
        return True
    warnings.warn(
        "DistributedDataParallel(broadcast_buffers=True) wraps a model with fake-quantizers: "
        "at every forward DDP copies rank 0's buffers, including the observers' running "
        "ranges and qparams, over every other rank's, so the other ranks' observations are "
        "lost. Wrap the prepared model with DistributedDataParallel(model, "
        "broadcast_buffers=False) (forward_sync_buffers=False from torch 2.13); coreai_opt "
        "synchronises the observer ranges itself (at calibration exit, Quantizer.step() and "
        "Quantizer.sync_observers())",
        UserWarning,
        stacklevel=2,
    )
    return False


def _unwrap(model: nn.Module) -> nn.Module:
    if _is_ddp(model):
        check_ddp(model)
        inner = model.module
        assert isinstance(inner, nn.Module)
        return inner
    return model


# -- FSDP2 ------------------------------------------------------------------------------------


def _is_fsdp(module: object) -> bool:
    return _FSDPModule is not None and isinstance(module, _FSDPModule)


def _is_dtensor(tensor: object) -> bool:
    """True for a ``DTensor`` (a parameter sharded by FSDP2's ``fully_shard``)."""
    return _DTensor is not None and isinstance(tensor, _DTensor)


def check_unsharded(model: nn.Module, caller: str = "Quantizer.prepare()") -> None:
    """Raise when *model* is already sharded by FSDP2 (or holds ``DTensor`` parameters).

    Eager prepare records one forward to tell parameters from activations; under
    ``fully_shard`` the forward runs on all-gathered copies that are not the module's
    registered parameters, so every weight would be quantized as an activation (and not
    sharded by its parametrization) without any error.

    Raises:
        RuntimeError: naming the first sharded module or parameter and the fix (apply
            ``fully_shard`` after prepare).
    """
    where = next((name or "<root>" for name, m in model.named_modules() if _is_fsdp(m)), None)
    if where is None:
        where = next((name for name, p in model.named_parameters() if _is_dtensor(p)), None)
    if where is None:
        return
    raise RuntimeError(
        f"{caller}: the model is already sharded by FSDP2 (fully_shard / DTensor parameters, "
        f"first at {where!r}). Prepare the unsharded model and apply fully_shard to the "
        f"model that Quantizer.prepare() returns: prepare records one forward to tell "
        f"parameters from activations, and under fully_shard that forward sees all-gathered "
        f"copies, so the weights would be quantized as activations"
    )


def _fsdp_reshards_after_forward(model: nn.Module) -> dict[int, bool | None]:
    """``id(sharded parameter) -> whether its FSDP2 group reshards after forward`` (None:
    this torch's FSDP2 state could not be read)."""
    found: dict[int, bool | None] = {}
    for module in model.modules():
        if not _is_fsdp(module):
            continue
        try:
            groups = module._get_fsdp_state()._fsdp_param_groups  # type: ignore[attr-defined]
            for group in groups:
                reshards = group.post_forward_mesh_info is not None
                for fsdp_param in group.fsdp_params:
                    found[id(fsdp_param.sharded_param)] = reshards
        except AttributeError:
            for param in module.parameters():
                found.setdefault(id(param), None)
    return found


def check_fsdp(model: nn.Module) -> None:
    """Raise when FSDP2 made a backward differentiate LSQ qparams other than the forward's.

    An LSQ fake-quantizer (``fake_quantize_cls="lsq"``) whose observer is on writes the
    calculator's qparams into its ``scale`` / ``zero_point`` parameters inside the forward.
    With its parameters sharded by an FSDP2 group that reshards after forward, the backward
    all-gathers the values from before that write instead. Raised (on every rank, before
    any collective: the condition is the same on all of them) for a fake-quantizer in
    training mode with its observer on whose sharded ``scale`` has a gradient; nothing
    happens for models without FSDP2 or without LSQ. Called by :func:`sync_observers`.

    Raises:
        RuntimeError: naming the fake-quantizers and the fix
            (``reshard_after_forward=False`` for their groups while the observer is on).
    """
    lsq = [
        (name, m)
        for name, m in model.named_modules()
        if isinstance(m, LearnableFakeQuantize) and _is_dtensor(m.scale)
    ]
    if not lsq:
        return
    reshards = _fsdp_reshards_after_forward(model)
    stale = [
        name
        for name, fq in lsq
        if fq.training
        and bool(fq.observer_enabled[0])
        and fq.scale.grad is not None
        and reshards.get(id(fq.scale), None) is not False
    ]
    if not stale:
        return
    raise RuntimeError(
        f"FSDP2 over LSQ fake-quantizers with the observer on: {stale} wrote their observed "
        f"scale / zero_point into the unsharded parameters during the forward, and their "
        f"fully_shard group reshards after forward, so the backward all-gathered the values "
        f"from before that write and differentiated with qparams other than the forward's "
        f"(DDP or a single process would not). Apply fully_shard(..., "
        f"reshard_after_forward=False) (or module.set_reshard_after_forward(False)) to the "
        f"modules holding LSQ fake-quantizers while the observer is on (a QATSchedule's "
        f"disable_observer), or switch their observer off before training; coreai_opt "
        f"writes the synchronised qparams into every shard at each Quantizer.step()"
    )


# -- the sync ---------------------------------------------------------------------------------


def syncable_fake_quantizers(model: nn.Module) -> list[tuple[str, FakeQuantizeImplBase]]:
    """``(name, fake-quantizer)`` pairs a sync reduces, in module order.

    A fake-quantizer takes part when it is not disabled, is not stateless and its
    ``qparams_calculator`` derives from ``StatefulQParamsCalculatorBase`` (see the module
    docstring for why the others are skipped). A shared one appears once.
    """
    found = []
    for name, module in _unwrap(model).named_modules():
        if not isinstance(module, FakeQuantizeImplBase):
            continue
        if module.is_disabled() or module.is_stateless:
            continue
        calc = getattr(module, "qparams_calculator", None)
        if isinstance(calc, StatefulQParamsCalculatorBase):
            found.append((name, module))
    return found


def _collective_device(group: ProcessGroup | None, tensors: list[torch.Tensor]) -> torch.device:
    """Where the packed buffer lives: the first tensor's device, or the current CUDA device
    when the backend is NCCL (which reduces CUDA tensors only) and the state is on the CPU."""
    device = tensors[0].device if tensors else torch.device("cpu")
    nccl = "nccl" in str(dist.get_backend(group))
    if device.type == "cpu" and nccl and torch.cuda.is_available():
        device = torch.device("cuda", torch.cuda.current_device())
    return device


def _check_layout(
    entries: list[tuple[str, StatefulQParamsCalculatorBase]],
    numel: int,
    device: torch.device,
    group: ProcessGroup | None,
) -> None:
    text = ";".join(f"{name}:{tuple(calc.running_min.shape)}" for name, calc in entries)
    crc = zlib.crc32(text.encode())
    local = [float(numel), float(crc >> 16), float(crc & 0xFFFF)]
    header = torch.tensor(local + [-v for v in local], dtype=torch.float64, device=device)
    dist.all_reduce(header, op=dist.ReduceOp.MIN, group=group)
    low, high = header[:3].tolist(), [-v for v in header[3:].tolist()]
    if low != high:
        raise RuntimeError(
            f"sync_observers(): the ranks' fake-quantizers differ (this rank has {len(entries)} "
            f"with {numel} range elements; the group's counts range from {int(low[0])} to "
            f"{int(high[0])}, or the names / shapes differ). Every rank must run the same "
            f"prepared model and have observed data with it (one forward sizes the ranges) "
            f"before the sync"
        )


def _copy_into_param(param: torch.Tensor, value: torch.Tensor) -> None:
    """``param.copy_(value)`` under ``no_grad``; *value* (a full tensor, the same on every
    rank) is split locally, without a collective, when *param* is an FSDP2 shard."""
    if not _is_dtensor(param):
        param.copy_(value)
        return
    mesh, placements = param.device_mesh, param.placements  # type: ignore[attr-defined]
    local = _distribute_tensor(
        value.to(param.device, param.dtype), mesh, placements, src_data_rank=None
    ).to_local()
    param.to_local().copy_(local)  # type: ignore[attr-defined]


def _sync_lsq(fq: FakeQuantizeImplBase, calc: StatefulQParamsCalculatorBase) -> None:
    if not isinstance(fq, LearnableFakeQuantize) or not bool(fq.observer_enabled[0]):
        return
    if fq.scale.shape != calc.scale.shape:
        return
    with torch.no_grad():
        _copy_into_param(fq.scale, calc.scale)
        if calc.zero_point is not None:
            _copy_into_param(fq.zero_point, calc.zero_point)


def sync_observers(model: nn.Module, group: ProcessGroup | None = None) -> int:
    """Reduce the observer ranges of *model* across *group* and recompute the qparams.

    Args:
        model: a prepared model, or the ``DistributedDataParallel`` wrapping it (then
            :func:`check_ddp` warns about ``broadcast_buffers=True``).
        group: the data-parallel process group (None: the default group).

    Returns:
        The number of fake-quantizers synchronised; 0 (and no collective) when
        :func:`is_distributed` is False. Every rank of *group* must call it at the same
        point (it is a collective). Ignores the automatic-sync switch.

    Raises:
        RuntimeError: on every rank, when the ranks' fake-quantizer layouts differ, or
            when :func:`check_fsdp` finds LSQ fake-quantizers desynchronised by FSDP2.
    """
    inner = _unwrap(model)
    if not is_distributed(group):
        return 0
    check_fsdp(inner)
    fqs = syncable_fake_quantizers(inner)
    entries: list[tuple[str, StatefulQParamsCalculatorBase]] = [
        (name, fq.qparams_calculator)  # type: ignore[attr-defined]
        for name, fq in fqs
    ]
    live = [(fq, calc) for (_, fq), (_, calc) in zip(fqs, entries, strict=True) if calc.initialized]
    numel = sum(calc.running_min.numel() for _, calc in live)
    device = _collective_device(group, [calc.running_min for _, calc in live])
    _check_layout(entries, numel, device, group)
    if numel == 0:
        return 0
    parts = [calc.running_min.detach().reshape(-1).to(device, torch.float32) for _, calc in live]
    parts += [
        calc.running_max.detach().reshape(-1).to(device, torch.float32).neg() for _, calc in live
    ]
    buffer = torch.cat(parts)
    dist.all_reduce(buffer, op=dist.ReduceOp.MIN, group=group)
    lows, highs = buffer[:numel], buffer[numel:].neg()
    offset = 0
    with torch.no_grad():
        for fq, calc in live:
            n, shape = calc.running_min.numel(), calc.running_min.shape
            calc.running_min.copy_(lows[offset : offset + n].view(shape))
            calc.running_max.copy_(highs[offset : offset + n].view(shape))
            offset += n
            calc.update_qparams_from_running_range()
            _sync_lsq(fq, calc)
    # The qparams changed in place, which moves their versions: eager weights cached per
    # weight version (FakeQuantize._forward_fast) see that; nothing was replaced, so the
    # state epoch stays.
    return len(live)


def sync_observers_if_enabled(model: nn.Module) -> int:
    """:func:`sync_observers` with the automatic-sync group, when the switch is on.

    What the life cycle calls at calibration exit and at ``Quantizer.step()``; returns 0
    without any collective when the switch is off or :func:`is_distributed` is False.
    """
    if not _AUTO.enabled or not is_distributed(_AUTO.group):
        return 0
    return sync_observers(model, _AUTO.group)


# -- other buffers ----------------------------------------------------------------------------


def _observer_buffer_ids(model: nn.Module) -> set[int]:
    ids: set[int] = set()
    for module in model.modules():
        if isinstance(module, FakeQuantizeImplBase):
            ids.update(id(b) for b in module.buffers())
    return ids


def broadcast_non_observer_buffers(
    model: nn.Module, src: int = 0, group: ProcessGroup | None = None
) -> int:
    """Copy rank *src*'s buffers that are not fake-quantizer state to every rank.

    With ``DistributedDataParallel(broadcast_buffers=False)`` buffers such as BatchNorm
    running statistics stay per rank; call this (on every rank, it is a collective) before
    finalizing so that all ranks finalize the same model, as DDP's default broadcast would
    have left them, while the observers keep their synchronised ranges. Floating-point
    buffers travel in one coalesced broadcast per dtype and device, others one by one.

    Returns:
        The number of buffers broadcast (0, and no collective, when :func:`is_distributed`
        is False).
    """
    inner = _unwrap(model)
    if not is_distributed(group):
        return 0
    skip = _observer_buffer_ids(inner)
    buffers = [b for b in inner.buffers() if id(b) not in skip and b.numel() > 0]
    global_src = src if group is None else dist.get_global_rank(group, src)
    buckets: dict[tuple[torch.dtype, torch.device], list[torch.Tensor]] = {}
    for b in buffers:
        buckets.setdefault((b.dtype, b.device), []).append(b)
    for (dtype, device), items in buckets.items():
        comm = _collective_device(group, items)
        groups = [items] if dtype.is_floating_point else [[b] for b in items]
        for chunk in groups:
            flat = torch.cat([b.detach().reshape(-1) for b in chunk]).to(comm)
            dist.broadcast(flat, src=global_src, group=group)
            offset = 0
            with torch.no_grad():
                for b in chunk:
                    b.copy_(flat[offset : offset + b.numel()].view(b.shape).to(device))
                    offset += b.numel()
    return len(buffers)
