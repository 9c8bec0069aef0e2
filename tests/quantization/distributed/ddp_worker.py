"""One rank of the distributed tests: ``python ddp_worker.py RANK WORLD PORT OUT_DIR``.

Joins a gloo group on 127.0.0.1:PORT with one thread, runs every scenario below on its
own shard of the data and saves ``{scenario: {name: value}}`` to ``OUT_DIR/rank<R>.pt``
(``{"error": traceback}`` for a scenario that raised, after which the rank stops). The
assertions live in ``test_distributed_sync.py``, which compares the ranks' files.
"""

from __future__ import annotations

import os
import sys
import time
import traceback
import warnings
from collections.abc import Callable
from datetime import timedelta
from pathlib import Path
from typing import Any

import torch
import torch.distributed as dist
from torch import nn

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
    config_kwargs: dict[str, Any], model: nn.Module | None = None
) -> tuple[Quantizer, nn.Module]:
    q = Quantizer(model if model is not None else cases.MLP(), cases.config(**config_kwargs))
    return q, cases.prepare(q, conv=model is not None)


def calib_global_minmax(rank: int) -> Result:
    q, gm = _prepare({"act_calculator": "global_minmax"})
    q.calibrate(cases.batches(rank, 3))
    return {"state": cases.observer_state(gm)}


def calib_static(rank: int) -> Result:
    q, gm = _prepare({"act_calculator": "static"})
    q.calibrate(cases.batches(rank, 1, seed=1))
    return {"state": cases.observer_state(gm)}


def explicit_moving_average(rank: int) -> Result:
    q, gm = _prepare({"act_calculator": "moving_average"})
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


def _qat(rank: int, q: Quantizer, gm: nn.Module, steps: int, watch: int) -> Result:
    q.calibrate(cases.batches(rank, 2, seed=3))
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        ddp = cases.ddp(gm, sync_buffers=False)
        ok = qdist.check_ddp(ddp)
    opt = torch.optim.SGD(ddp.parameters(), lr=0.05)
    xs, ys = cases.batches(rank, steps, seed=4), cases.targets(rank, steps)
    out: Result = {"check_ddp": ok, "ddp_warnings": [str(w.message) for w in caught]}
    forward_calls, step_calls = 0, []
    with q.training_mode(gm), _CountAllReduce() as counter:
        for i, (x, y) in enumerate(zip(xs, ys, strict=True)):
            before = counter.calls
            loss = nn.functional.mse_loss(ddp(x), y)
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
                    name: (fq.scale.detach().clone(), fq.qparams_calculator.scale.clone())
                    for name, fq in fake_quantizers(gm).items()
                    if isinstance(getattr(fq, "scale", None), nn.Parameter)
                }
    final = q.finalize(gm, backend="_torch")
    out.update(
        forward_allreduce_calls=forward_calls,
        step_allreduce_calls=step_calls,
        final={k: v.detach().clone() for k, v in final.state_dict().items()},
    )
    return out


def qat_ddp(rank: int) -> Result:
    q, gm = _prepare({"schedule": QATSchedule(disable_observer=3)})
    return _qat(rank, q, gm, steps=5, watch=1)


def qat_ddp_lsq(rank: int) -> Result:
    q, gm = _prepare({"act_fq": "lsq", "schedule": QATSchedule(disable_observer=2)})
    return _qat(rank, q, gm, steps=4, watch=0)


def uninitialised(rank: int) -> Result:
    q, gm = _prepare({"act_calculator": "global_minmax"})
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


def ddp_warning(rank: int) -> Result:
    q, gm = _prepare({})
    _, gm2 = _prepare({})
    _, gm3 = _prepare({})
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


def layout_mismatch(rank: int) -> Result:
    q, _ = _prepare({}, model=None if rank == 0 else cases.ConvBn())
    try:
        q.sync_observers()
    except RuntimeError as err:
        message = str(err)
    else:
        message = ""
    dist.barrier()  # the group still works
    return {"message": message}


def conv_bn_buffers(rank: int) -> Result:
    q, gm = _prepare({"schedule": QATSchedule(disable_observer=2)}, model=cases.ConvBn())
    q.calibrate(cases.batches(rank, 2, seed=6, shape=(4, 3, 6, 6)))
    ddp = cases.ddp(gm, sync_buffers=False)
    opt = torch.optim.SGD(ddp.parameters(), lr=0.05)
    xs = cases.batches(rank, 3, seed=7, shape=(4, 3, 6, 6))
    ys = cases.targets(rank, 3, out=2, batch=4)
    with q.training_mode(gm):
        for x, y in zip(xs, ys, strict=True):
            loss = nn.functional.mse_loss(ddp(x), y)
            opt.zero_grad()
            loss.backward()
            opt.step()
            q.step()
    bn = {k: v.clone() for k, v in gm.state_dict().items() if "running_mean" in k}
    count = qdist.broadcast_non_observer_buffers(ddp)
    final = q.finalize(gm, backend="_torch")
    return {
        "bn_before": bn,
        "broadcast": count,
        "final": {k: v.detach().clone() for k, v in final.state_dict().items()},
    }


SCENARIOS: list[Callable[[int], Result]] = [
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
    for scenario in SCENARIOS:
        start = time.perf_counter()
        try:
            results[scenario.__name__] = scenario(rank)
        except Exception:
            results[scenario.__name__] = {"error": traceback.format_exc()}
            status = 1
            break
        results[scenario.__name__]["seconds"] = time.perf_counter() - start
    torch.save(results, os.path.join(out, f"rank{rank}.pt"))
    if status == 0:
        dist.barrier()
        dist.destroy_process_group()
    return status


if __name__ == "__main__":
    sys.exit(main())
