"""One rank of the distributed tests: ``python ddp_worker.py RANK WORLD PORT OUT_DIR``.

Joins a gloo group on 127.0.0.1:PORT with one thread, runs every scenario below on its
own shard of the data — the DDP / sync scenarios in both execution modes, then the FSDP2
ones over eager-prepared models — and saves ``{"<mode>/<scenario>": {name: value}}`` to
``OUT_DIR/rank<R>.pt`` (``{"error": traceback}`` for a scenario that raised, after which the
rank stops). The assertions live in ``test_distributed_sync.py``, which compares the ranks'
files.
"""

from __future__ import annotations

import os
import sys
import time
import traceback
import warnings
from collections.abc import Callable
from datetime import timedelta
from functools import cache, partial
from pathlib import Path
from typing import Any

import torch
import torch.distributed as dist
from torch import nn
from torch.distributed.device_mesh import DeviceMesh, init_device_mesh

try:
    from torch.distributed.fsdp import fully_shard
except ImportError:  # torch < 2.6
    from torch.distributed._composable.fsdp import fully_shard

sys.path.insert(0, str(Path(__file__).resolve().parent))

import dist_cases as cases

from coreai_opt.quantization import Quantizer
from coreai_opt.quantization import distributed as qdist
from coreai_opt.quantization._lifecycle import fake_quantizers
from coreai_opt.quantization.config import QATSchedule

Result = dict[str, Any]


class _CountAllReduce:
    """Counts torch.distributed.all_reduce calls (to show none happens inside forward)."""

    def __init__(self) -> None:
        self.calls = 0
        self._orig = dist.all_reduce

    def __enter__(self) -> _CountAllReduce:
        def counted(*args: Any, **kwargs: Any) -> Any:
            self.calls += 1
            return self._orig(*args, **kwargs)

        dist.all_reduce = counted
        return self

    def __exit__(self, *exc: object) -> None:
        dist.all_reduce = self._orig


def _prepare(
    mode: str, config_kwargs: dict[str, Any], model: nn.Module | None = None
) -> tuple[Quantizer, nn.Module]:
    config = cases.config(mode=mode, **config_kwargs)
    q = Quantizer(model if model is not None else cases.MLP(), config)
    return q, cases.prepare(q, conv=model is not None)


def calib_global_minmax(rank: int, mode: str) -> Result:
    q, gm = _prepare(mode, {"act_calculator": "global_minmax"})
    q.calibrate(cases.batches(rank, 3))
    return {"state": cases.observer_state(gm)}


def calib_static(rank: int, mode: str) -> Result:
    q, gm = _prepare(mode, {"act_calculator": "static"})
    q.calibrate(cases.batches(rank, 1, seed=1))
    return {"state": cases.observer_state(gm)}


def explicit_moving_average(rank: int, mode: str) -> Result:
    q, gm = _prepare(mode, {"act_calculator": "moving_average"})
    with qdist.auto_sync(False):
        q.calibrate(cases.batches(rank, 3, seed=2))
        local = cases.observer_state(gm)
        synced = q.sync_observers()
    return {
        "local": local,
        "state": cases.observer_state(gm),
        "synced": synced,
        "auto_after": qdist.auto_sync_enabled(),
    }


Wrap = Callable[[nn.Module], nn.Module]


def _ddp_wrap(model: nn.Module) -> nn.Module:
    return cases.ddp(model, sync_buffers=False)


@cache
def _mesh() -> DeviceMesh:
    """The 1-D CPU device mesh over the whole group (built once)."""
    return init_device_mesh("cpu", (dist.get_world_size(),))


def _fsdp_wrap(reshard_after_forward: bool = True) -> Wrap:
    """FSDP2 over an eager-prepared model: one group per child with parameters, then the
    root (the usual per-layer wrapping); the model itself is returned, its class swapped."""

    def wrap(model: nn.Module) -> nn.Module:
        mesh = _mesh()
        for child in model.children():
            if any(True for _ in child.parameters()):
                fully_shard(child, mesh=mesh, reshard_after_forward=reshard_after_forward)
        fully_shard(model, mesh=mesh)
        return model

    return wrap


def _qat(
    rank: int,
    q: Quantizer,
    gm: nn.Module,
    steps: int,
    watch: int,
    eval_from: int,
    wrap: Wrap = _ddp_wrap,
) -> Result:
    """Calibrate, wrap, train *steps* QAT steps (recording the observers around step
    *watch*, and from step *eval_from* on, when the observers are off, an eval-mode no-grad
    forward of a fixed batch), finalize to _TORCH."""
    q.calibrate(cases.batches(rank, 2, seed=3))
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        model = wrap(gm)
        ok = qdist.check_ddp(model)
    opt = torch.optim.SGD(model.parameters(), lr=0.05)
    xs, ys = cases.batches(rank, steps, seed=4), cases.targets(rank, steps)
    probe = cases.batches(0, 1, seed=8)[0]
    out: Result = {"check_ddp": ok, "ddp_warnings": [str(w.message) for w in caught]}
    forward_calls, step_calls, evals = 0, [], []
    with q.training_mode(gm), _CountAllReduce() as counter:
        for i, (x, y) in enumerate(zip(xs, ys, strict=True)):
            before = counter.calls
            loss = nn.functional.mse_loss(model(x), y)
            opt.zero_grad()
            loss.backward()
            opt.step()
            forward_calls += counter.calls - before
            if i == watch:
                out["pre_step"] = cases.observer_state(gm)
            before = counter.calls
            q.step()
            step_calls.append(counter.calls - before)
            if i == watch:
                out["post_step"] = cases.observer_state(gm)
                out["post_step_lsq"] = {
                    name: (cases.full_tensor(fq.scale), fq.qparams_calculator.scale.clone())
                    for name, fq in fake_quantizers(gm).items()
                    if isinstance(getattr(fq, "scale", None), nn.Parameter)
                }
            if i >= eval_from:
                # inference between steps: eager weights are fake-quantized once per
                # weight version here (a stale cache would repeat an old result)
                model.eval()
                with torch.no_grad():
                    evals.append(model(probe).clone())
                model.train()
    final = q.finalize(gm, backend="_torch")
    out.update(
        forward_allreduce_calls=forward_calls,
        step_allreduce_calls=step_calls,
        evals=evals,
        final=cases.full_state(final),
    )
    return out


def qat_ddp(rank: int, mode: str) -> Result:
    q, gm = _prepare(mode, {"schedule": QATSchedule(disable_observer=3)})
    return _qat(rank, q, gm, steps=5, watch=1, eval_from=2)


def qat_ddp_lsq(rank: int, mode: str) -> Result:
    q, gm = _prepare(mode, {"act_fq": "lsq", "schedule": QATSchedule(disable_observer=2)})
    return _qat(rank, q, gm, steps=4, watch=0, eval_from=1)


def uninitialised(rank: int, mode: str) -> Result:
    q, gm = _prepare(mode, {"act_calculator": "global_minmax"})
    with qdist.auto_sync(False):
        q.calibrate(cases.batches(rank, 2, seed=5))
    calcs = {
        name: fq.qparams_calculator
        for name, fq in fake_quantizers(gm).items()
        if fq.quantization_target.value == "activation"
    }
    never = sorted(calcs)[-1]  # unobserved on every rank
    for name, calc in calcs.items():
        if rank == 1 or name == never:
            # the state of a fake-quantizer that never saw data, with a recognisable scale
            calc.running_min.fill_(float("inf"))
            calc.running_max.fill_(-float("inf"))
            calc.scale.fill_(7.0)
            calc.zero_point.zero_()
            calc.minval.zero_()
    before = cases.observer_state(gm)
    synced = q.sync_observers()
    return {"before": before, "state": cases.observer_state(gm), "never": never, "synced": synced}


def ddp_warning(rank: int, mode: str) -> Result:
    q, gm = _prepare(mode, {})
    _, gm2 = _prepare(mode, {})
    _, gm3 = _prepare(mode, {})
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        bad = cases.ddp(gm, sync_buffers=None)  # DDP's default broadcasts buffers
        ok = qdist.check_ddp(bad)
        synced = q.sync_observers(bad)
        ok_explicit = qdist.check_ddp(cases.ddp(gm3, sync_buffers=True))
    with warnings.catch_warnings(record=True) as caught_good:
        warnings.simplefilter("always")
        good = cases.ddp(gm2, sync_buffers=False)
        ok_good = qdist.check_ddp(good)
    return {
        "ok": ok,
        "ok_explicit": ok_explicit,
        "messages": [str(w.message) for w in caught],
        "synced": synced,
        "ok_good": ok_good,
        "messages_good": [str(w.message) for w in caught_good],
    }


def layout_mismatch(rank: int, mode: str) -> Result:
    q, _ = _prepare(mode, {}, model=None if rank == 0 else cases.ConvBn())
    try:
        q.sync_observers()
    except RuntimeError as err:
        message = str(err)
    else:
        message = ""
    dist.barrier()  # the group still works
    return {"message": message}


def _conv_bn(rank: int, mode: str, wrap: Wrap) -> Result:
    q, gm = _prepare(mode, {"schedule": QATSchedule(disable_observer=2)}, model=cases.ConvBn())
    q.calibrate(cases.batches(rank, 2, seed=6, shape=(4, 3, 6, 6)))
    model = wrap(gm)
    opt = torch.optim.SGD(model.parameters(), lr=0.05)
    xs = cases.batches(rank, 3, seed=7, shape=(4, 3, 6, 6))
    ys = cases.targets(rank, 3, out=2, batch=4)
    with q.training_mode(gm):
        for x, y in zip(xs, ys, strict=True):
            loss = nn.functional.mse_loss(model(x), y)
            opt.zero_grad()
            loss.backward()
            opt.step()
            q.step()
    bn = {k: v.clone() for k, v in gm.state_dict().items() if "running_mean" in k}
    count = qdist.broadcast_non_observer_buffers(model)
    final = q.finalize(gm, backend="_torch")
    return {"bn_before": bn, "broadcast": count, "final": cases.full_state(final)}


def conv_bn_buffers(rank: int, mode: str) -> Result:
    return _conv_bn(rank, mode, _ddp_wrap)


# -- FSDP2 over eager-prepared models -----------------------------------------------------


def qat_fsdp(rank: int) -> Result:
    """``qat_ddp`` (eager) with FSDP2 instead of DDP."""
    q, gm = _prepare("eager", {"schedule": QATSchedule(disable_observer=3)})
    return _qat(rank, q, gm, steps=5, watch=1, eval_from=2, wrap=_fsdp_wrap())


def qat_fsdp_lsq(rank: int) -> Result:
    """``qat_ddp_lsq`` (eager) with FSDP2, LSQ groups not resharded after forward."""
    q, gm = _prepare("eager", {"act_fq": "lsq", "schedule": QATSchedule(disable_observer=2)})
    wrap = _fsdp_wrap(reshard_after_forward=False)
    return _qat(rank, q, gm, steps=4, watch=0, eval_from=1, wrap=wrap)


def fsdp_lsq_resharded(rank: int) -> Result:
    """LSQ with the observer on under FSDP2 groups that reshard after forward: step() raises
    (on both ranks, before any collective, so the group stays usable)."""
    q, gm = _prepare("eager", {"act_fq": "lsq", "schedule": QATSchedule(disable_observer=2)})
    q.calibrate(cases.batches(rank, 2, seed=3))  # no backward: nothing to refuse
    model = _fsdp_wrap(reshard_after_forward=True)(gm)
    opt = torch.optim.SGD(model.parameters(), lr=0.05)
    x, y = cases.batches(rank, 1, seed=4)[0], cases.targets(rank, 1)[0]
    message = ""
    with q.training_mode(gm):
        nn.functional.mse_loss(model(x), y).backward()
        opt.step()
        try:
            q.step()
        except RuntimeError as err:
            message = str(err)
    dist.barrier()
    return {"message": message}


def conv_bn_fsdp(rank: int) -> Result:
    """``conv_bn_buffers`` (eager) with FSDP2 instead of DDP."""
    return _conv_bn(rank, "eager", _fsdp_wrap())


def shard_before_prepare(rank: int) -> Result:
    """fully_shard first: check_unsharded refuses the model (prepare would quantize the
    all-gathered weights as activations)."""
    model = _fsdp_wrap()(cases.MLP())
    try:
        qdist.check_unsharded(model)
    except RuntimeError as err:
        message = str(err)
    else:
        message = ""
    return {"message": message, "plain_ok": qdist.check_unsharded(cases.MLP()) is None}


MODE_SCENARIOS: list[Callable[[int, str], Result]] = [
    calib_global_minmax,
    calib_static,
    explicit_moving_average,
    qat_ddp,
    qat_ddp_lsq,
    uninitialised,
    ddp_warning,
    layout_mismatch,
    conv_bn_buffers,
]
FSDP_SCENARIOS: list[Callable[[int], Result]] = [
    qat_fsdp,
    qat_fsdp_lsq,
    fsdp_lsq_resharded,
    conv_bn_fsdp,
    shard_before_prepare,
]


def _scenarios() -> list[tuple[str, Callable[[int], Result]]]:
    """``(result key, run(rank))``: every mode scenario as ``<mode>/<name>``, then the FSDP2
    ones as ``eager/<name>``."""
    runs: list[tuple[str, Callable[[int], Result]]] = []
    for mode in cases.MODES:
        for scenario in MODE_SCENARIOS:
            runs.append((f"{mode}/{scenario.__name__}", partial(_call, scenario, mode)))
    runs += [(f"eager/{scenario.__name__}", scenario) for scenario in FSDP_SCENARIOS]
    return runs


def _call(scenario: Callable[[int, str], Result], mode: str, rank: int) -> Result:
    return scenario(rank, mode)


def main() -> int:
    """Run every scenario on this rank and save the results."""
    rank, world, port, out = int(sys.argv[1]), int(sys.argv[2]), int(sys.argv[3]), sys.argv[4]
    torch.set_num_threads(1)
    dist.init_process_group(
        "gloo",
        init_method=f"tcp://127.0.0.1:{port}",
        rank=rank,
        world_size=world,
        timeout=timedelta(seconds=60),
    )
    results: dict[str, Result] = {}
    status = 0
    for key, run in _scenarios():
        start = time.perf_counter()
        try:
            results[key] = run(rank)
        except Exception:
            results[key] = {"error": traceback.format_exc()}
            status = 1
            break
        results[key]["seconds"] = time.perf_counter() - start
    torch.save(results, os.path.join(out, f"rank{rank}.pt"))
    if status == 0:
        dist.barrier()
        dist.destroy_process_group()
    return status


if __name__ == "__main__":
    sys.exit(main())
