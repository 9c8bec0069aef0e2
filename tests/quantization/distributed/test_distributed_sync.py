"""Observer sync across ranks (coreai_opt.quantization.distributed).

Two CPU ranks (gloo on 127.0.0.1, one thread each) run ``ddp_worker.py`` once for the
module; each test reads one scenario of both ranks' results. Single-process checks (no
process group: nothing syncs; the qparam recomputation; the switches) run in this process.
"""

from __future__ import annotations

import os
import socket
import subprocess
import sys
from pathlib import Path
from typing import Any

import dist_cases as cases
import pytest
import torch
import torch.distributed as dist

import coreai_opt  # noqa: F401  (loads the op library)
from coreai_opt import _ops
from coreai_opt.quantization import Quantizer
from coreai_opt.quantization import distributed as qdist
from coreai_opt.quantization._lifecycle import fake_quantizers
from coreai_opt.quantization.config import QATSchedule
from coreai_opt.quantization.spec import (
    PerChannelGranularity,
    PerTensorGranularity,
    QuantizationComponentFactory,
    QuantizationSpec,
    StatefulQParamsCalculatorBase,
)

WORKER = Path(__file__).resolve().parent / "ddp_worker.py"
INF = float("inf")


def _free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def _loopback_env() -> dict[str, str]:
    env = dict(os.environ, OMP_NUM_THREADS="1", MKL_NUM_THREADS="1")
    names = {name for _, name in socket.if_nameindex()}
    for name in ("lo", "lo0"):
        if name in names:
            env["GLOO_SOCKET_IFNAME"] = name
            break
    return env


@pytest.fixture(scope="module")
def ranks(tmp_path_factory: pytest.TempPathFactory) -> list[dict[str, Any]]:
    """Both ranks' results, ``{scenario: {name: value}}`` per rank."""
    if not (dist.is_available() and dist.is_gloo_available()):
        pytest.skip("torch.distributed with the gloo backend is not available")
    out = tmp_path_factory.mktemp("ddp")
    port = str(_free_port())
    world = str(cases.WORLD_SIZE)
    procs = [
        subprocess.Popen(
            [sys.executable, str(WORKER), str(rank), world, port, str(out)],
            env=_loopback_env(),
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
            text=True,
        )
        for rank in range(cases.WORLD_SIZE)
    ]
    logs = []
    for proc in procs:
        try:
            logs.append(proc.communicate(timeout=180)[0])
        except subprocess.TimeoutExpired:
            for p in procs:
                p.kill()
            pytest.fail("the distributed workers did not finish within 180 s")
    results = []
    for rank, (proc, log) in enumerate(zip(procs, logs, strict=True)):
        path = out / f"rank{rank}.pt"
        if not path.exists():
            pytest.fail(f"rank {rank} exited with {proc.returncode} and no results:\n{log[-4000:]}")
        results.append(torch.load(path, weights_only=False))
    for rank, result in enumerate(results):
        for name, value in result.items():
            if "error" in value:
                pytest.fail(f"rank {rank}, scenario {name} raised:\n{value['error']}")
    return results


def _scenario(ranks: list[dict[str, Any]], name: str) -> list[dict[str, Any]]:
    return [r[name] for r in ranks]


def _assert_equal_states(a: dict[str, torch.Tensor], b: dict[str, torch.Tensor]) -> None:
    assert a.keys() == b.keys()
    for key in a:
        assert torch.equal(a[key], b[key]), key


def _act_keys(state: dict[str, torch.Tensor], field: str) -> list[str]:
    """Keys of *field* of the activation FQs (the weight FQs see identical weights)."""
    return [k for k in state if k.endswith(f"qparams_calculator.{field}") and state[k].numel() == 1]


def _single_process(calculator: str, data: list[torch.Tensor]) -> dict[str, torch.Tensor]:
    q = Quantizer(cases.MLP(), cases.config(act_calculator=calculator))
    gm = cases.prepare(q)
    q.calibrate(data)
    return cases.observer_state(gm)


# -- calibration ---------------------------------------------------------------------------


def test_global_minmax_calibration_equals_one_process_on_the_union(ranks) -> None:
    r0, r1 = _scenario(ranks, "calib_global_minmax")
    _assert_equal_states(r0["state"], r1["state"])
    union = cases.batches(0, 3) + cases.batches(1, 3)
    _assert_equal_states(r0["state"], _single_process("global_minmax", union))


def test_static_calibration_equals_one_process_on_the_union(ranks) -> None:
    r0, r1 = _scenario(ranks, "calib_static")
    _assert_equal_states(r0["state"], r1["state"])
    union = [torch.cat(cases.batches(0, 1, seed=1) + cases.batches(1, 1, seed=1))]
    _assert_equal_states(r0["state"], _single_process("static", union))


def test_explicit_sync_with_auto_sync_off_reduces_moving_averages(ranks) -> None:
    r0, r1 = _scenario(ranks, "explicit_moving_average")
    assert r0["auto_after"] and r1["auto_after"]  # the context manager restored the switch
    assert r0["synced"] == r1["synced"] == 5  # 2 weight FQs + 3 activation FQs
    lows, highs = _act_keys(r0["local"], "running_min"), _act_keys(r0["local"], "running_max")
    assert lows and len(lows) == len(highs) == 3
    # auto sync off: calibration left each rank with its own moving averages
    assert any(not torch.equal(r0["local"][k], r1["local"][k]) for k in lows + highs)
    _assert_equal_states(r0["state"], r1["state"])
    for lo_key, hi_key in zip(lows, highs, strict=True):
        lo = torch.minimum(r0["local"][lo_key], r1["local"][lo_key])
        hi = torch.maximum(r0["local"][hi_key], r1["local"][hi_key])
        assert torch.equal(r0["state"][lo_key], lo)
        assert torch.equal(r0["state"][hi_key], hi)
        scale, zp, minval = _ops.choose_qparams_int(
            lo, hi, quant_min=-128, quant_max=127, symmetric=False
        )
        prefix = lo_key.removesuffix("running_min")
        assert torch.equal(r0["state"][prefix + "scale"], scale)
        assert torch.equal(r0["state"][prefix + "zero_point"], zp)
        assert torch.equal(r0["state"][prefix + "minval"], minval)


def test_a_rank_that_saw_nothing_takes_the_others_ranges(ranks) -> None:
    r0, r1 = _scenario(ranks, "uninitialised")
    assert r0["synced"] == r1["synced"] == 5
    _assert_equal_states(r0["state"], r1["state"])
    never = r0["never"] + ".qparams_calculator."
    for key, before in r0["before"].items():
        if key.startswith(never):
            continue
        # rank 1's +inf / -inf did not move rank 0's ranges, and recomputing rank 0's
        # qparams from its own range gives the forward's bits
        assert torch.equal(r0["state"][key], before), key
    # unobserved on every rank: the range stays empty and the stored qparams are kept
    assert torch.equal(r0["state"][never + "running_min"], torch.full((1, 1), INF))
    assert torch.equal(r0["state"][never + "running_max"], torch.full((1, 1), -INF))
    assert torch.equal(r0["state"][never + "scale"], torch.full((1, 1), 7.0))


def test_different_models_raise_the_same_error_on_every_rank(ranks) -> None:
    r0, r1 = _scenario(ranks, "layout_mismatch")
    for result in (r0, r1):
        assert "the ranks' fake-quantizers differ" in result["message"]
        assert "same prepared model" in result["message"]


# -- QAT with DDP --------------------------------------------------------------------------


@pytest.mark.parametrize("scenario", ["qat_ddp", "qat_ddp_lsq"])
def test_qat_with_ddp_finalizes_identical_models(ranks, scenario: str) -> None:
    r0, r1 = _scenario(ranks, scenario)
    assert r0["check_ddp"] and not r0["ddp_warnings"]
    final0, final1 = r0["final"], r1["final"]
    _assert_equal_states(final0, final1)
    assert any(k.endswith("fc1.weight") for k in final0)
    # the weights did train
    q = Quantizer(cases.MLP(), cases.config())
    gm = cases.prepare(q)
    assert not torch.equal(final0["fc1.weight"], gm.state_dict()["fc1.weight"])


@pytest.mark.parametrize("scenario", ["qat_ddp", "qat_ddp_lsq"])
def test_step_syncs_and_no_collective_runs_inside_forward(ranks, scenario: str) -> None:
    r0, r1 = _scenario(ranks, scenario)
    lows = _act_keys(r0["pre_step"], "running_min")
    assert any(not torch.equal(r0["pre_step"][k], r1["pre_step"][k]) for k in lows)
    _assert_equal_states(r0["post_step"], r1["post_step"])
    assert r0["forward_allreduce_calls"] == 0
    assert set(r0["step_allreduce_calls"]) == {2}  # the layout check and the ranges


def test_lsq_parameters_take_the_reduced_qparams_while_observing(ranks) -> None:
    r0, r1 = _scenario(ranks, "qat_ddp_lsq")
    lsq0, lsq1 = r0["post_step_lsq"], r1["post_step_lsq"]
    assert len(lsq0) == 3
    for name, (param, calc_scale) in lsq0.items():
        assert torch.equal(param, calc_scale), name
        assert torch.equal(param, lsq1[name][0]), name


def test_broadcasting_other_buffers_makes_conv_bn_models_identical(ranks) -> None:
    r0, r1 = _scenario(ranks, "conv_bn_buffers")
    (bn_key,) = r0["bn_before"]
    assert not torch.equal(r0["bn_before"][bn_key], r1["bn_before"][bn_key])
    assert r0["broadcast"] == r1["broadcast"] >= 2
    _assert_equal_states(r0["final"], r1["final"])


def test_ddp_that_broadcasts_buffers_warns(ranks) -> None:
    r0, _ = _scenario(ranks, "ddp_warning")
    assert r0["ok"] is False and r0["ok_explicit"] is False
    ours = [m for m in r0["messages"] if "fake-quantizers" in m]
    assert len(ours) == 3  # check_ddp on the default, sync_observers on it, the explicit True
    assert "broadcast_buffers=False" in ours[0] and "rank 0's buffers" in ours[0]
    assert r0["synced"] == 5
    assert r0["ok_good"] is True
    assert not [m for m in r0["messages_good"] if "fake-quantizers" in m]


# -- one process ---------------------------------------------------------------------------


def test_nothing_syncs_without_a_process_group(monkeypatch: pytest.MonkeyPatch) -> None:
    def no_collective(*args: Any, **kwargs: Any) -> None:
        raise AssertionError("no collective may run without a process group")

    monkeypatch.setattr(dist, "all_reduce", no_collective)
    monkeypatch.setattr(dist, "broadcast", no_collective)
    monkeypatch.setattr(dist, "barrier", no_collective)
    assert not dist.is_initialized() and not qdist.is_distributed()
    q = Quantizer(cases.MLP(), cases.config(schedule=QATSchedule(disable_observer=2)))
    gm = cases.prepare(q)
    q.calibrate(cases.batches(0, 2))
    before = cases.observer_state(gm)
    assert q.sync_observers() == 0
    assert qdist.sync_observers(gm) == 0 and qdist.sync_observers_if_enabled(gm) == 0
    assert qdist.broadcast_non_observer_buffers(gm) == 0
    _assert_equal_states(before, cases.observer_state(gm))
    with q.training_mode():
        gm(cases.batches(0, 1)[0])
        q.step()


def test_auto_sync_switch() -> None:
    assert qdist.auto_sync_enabled()
    with qdist.auto_sync(False):
        assert not qdist.auto_sync_enabled()
        with qdist.auto_sync(True):
            assert qdist.auto_sync_enabled()
        assert not qdist.auto_sync_enabled()
    assert qdist.auto_sync_enabled()
    qdist.set_auto_sync(False)
    try:
        assert not qdist.auto_sync_enabled()
    finally:
        qdist.set_auto_sync(True)
    with pytest.raises(TypeError, match="takes a bool"):
        qdist.set_auto_sync(1)  # type: ignore[arg-type]


def test_check_ddp_accepts_anything_that_is_not_ddp() -> None:
    assert qdist.check_ddp(cases.MLP())


def _fq(**spec: Any) -> Any:
    return QuantizationComponentFactory.create_fake_quantizer(
        QuantizationSpec(**spec), quantization_target="activation"
    )


def test_syncable_rules_skip_stateless_and_disabled() -> None:
    model = torch.nn.ModuleDict(
        {
            "ma": _fq(qparam_calculator_cls="moving_average"),
            "dyn": _fq(qparam_calculator_cls="dynamic"),
            "off": _fq(qparam_calculator_cls="static"),
        }
    )
    model["off"]._disabled = True
    assert [name for name, _ in qdist.syncable_fake_quantizers(model)] == ["ma"]
    assert set(fake_quantizers(model)) == {"ma", "dyn", "off"}


@pytest.mark.parametrize(
    "spec",
    [
        {"dtype": torch.int8, "qscheme": "asymmetric", "granularity": PerTensorGranularity()},
        {
            "dtype": torch.uint4,
            "qscheme": "symmetric",
            "granularity": PerChannelGranularity(axis=0),
        },
        {"dtype": torch.float8_e4m3fn, "granularity": PerChannelGranularity(axis=0)},
        {"dtype": torch.int8, "float_range": [-1.0, None], "granularity": PerTensorGranularity()},
    ],
    ids=["int8-asym", "uint4-sym-channel", "fp8-channel", "int8-pinned-min"],
)
def test_recomputed_qparams_equal_the_forward(spec: dict[str, Any]) -> None:
    fq = _fq(qparam_calculator_cls="moving_average", **spec)
    calc = fq.qparams_calculator
    assert isinstance(calc, StatefulQParamsCalculatorBase)
    calc.update_qparams_from_running_range()  # no state yet: a no-op
    x = torch.randn(6, 5, generator=torch.Generator().manual_seed(3)) * 3 + 1
    fq(x)
    fq(x * 0.5 - 2)
    stored = [None if t is None else t.clone() for t in calc.get_qparams()]
    calc.scale.fill_(5.0)
    calc.update_qparams_from_running_range()
    for got, want in zip(calc.get_qparams(), stored, strict=True):
        assert (got is None and want is None) or torch.equal(got, want)


def test_recompute_keeps_the_qparams_of_unobserved_elements() -> None:
    fq = _fq(qparam_calculator_cls="global_minmax", granularity=PerChannelGranularity(axis=0))
    fq(torch.randn(3, 4))
    calc = fq.qparams_calculator
    calc.running_min[1] = INF
    calc.running_max[1] = -INF
    calc.scale.fill_(9.0)
    calc.update_qparams_from_running_range()
    assert calc.scale[1].item() == 9.0
    assert calc.scale[0].item() != 9.0 and calc.scale[2].item() != 9.0
