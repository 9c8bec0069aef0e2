"""Observer sync across ranks (coreai_opt.quantization.distributed), both execution modes.

Two CPU ranks (gloo on 127.0.0.1, one thread each) run ``ddp_worker.py`` once for the
module; each test reads one scenario of both ranks' results, most of them once per
execution mode (graph: a GraphModule; eager: the model with FQ submodules and weight
parametrizations), the FSDP2 ones for eager models only. Single-process checks (no process
group: nothing syncs; the qparam recomputation; the switches) run in this process.
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


def _scenario(ranks: list[dict[str, Any]], name: str, mode: str) -> list[dict[str, Any]]:
    return [r[f"{mode}/{name}"] for r in ranks]


def _assert_close_states(a: dict[str, torch.Tensor], b: dict[str, torch.Tensor]) -> None:
    """FSDP2 against DDP: the same keys, values equal within float32 reduction noise (the
    gradients are averaged by a reduce-scatter instead of an all-reduce)."""
    assert a.keys() == b.keys()
    for key in a:
        assert a[key].dtype == b[key].dtype, key
        torch.testing.assert_close(a[key], b[key], rtol=1e-5, atol=1e-6, msg=key)


modes = pytest.mark.parametrize("mode", cases.MODES)


def _assert_equal_states(a: dict[str, torch.Tensor], b: dict[str, torch.Tensor]) -> None:
    assert a.keys() == b.keys()
    for key in a:
        assert torch.equal(a[key], b[key]), key


def _act_keys(state: dict[str, torch.Tensor], field: str) -> list[str]:
    """Keys of *field* of the activation FQs (the weight FQs see identical weights)."""
    return [k for k in state if k.endswith(f"qparams_calculator.{field}") and state[k].numel() == 1]


def _single_process(
    calculator: str, data: list[torch.Tensor], mode: str
) -> dict[str, torch.Tensor]:
    q = Quantizer(cases.MLP(), cases.config(act_calculator=calculator, mode=mode))
    gm = cases.prepare(q)
    q.calibrate(data)
    return cases.observer_state(gm)


# -- calibration ---------------------------------------------------------------------------


@modes
def test_global_minmax_calibration_equals_one_process_on_the_union(ranks, mode: str) -> None:
    r0, r1 = _scenario(ranks, "calib_global_minmax", mode)
    # every FQ: two switches, the range and the qparams
    assert len(r0["state"]) == 7 * cases.SYNCED[mode]
    _assert_equal_states(r0["state"], r1["state"])
    union = cases.batches(0, 3) + cases.batches(1, 3)
    _assert_equal_states(r0["state"], _single_process("global_minmax", union, mode))


@modes
def test_static_calibration_equals_one_process_on_the_union(ranks, mode: str) -> None:
    r0, r1 = _scenario(ranks, "calib_static", mode)
    _assert_equal_states(r0["state"], r1["state"])
    union = [torch.cat(cases.batches(0, 1, seed=1) + cases.batches(1, 1, seed=1))]
    _assert_equal_states(r0["state"], _single_process("static", union, mode))


@modes
def test_explicit_sync_with_auto_sync_off_reduces_moving_averages(ranks, mode: str) -> None:
    r0, r1 = _scenario(ranks, "explicit_moving_average", mode)
    assert r0["auto_after"] and r1["auto_after"]  # the context manager restored the switch
    assert r0["synced"] == r1["synced"] == cases.SYNCED[mode]  # weight and activation FQs
    lows, highs = _act_keys(r0["local"], "running_min"), _act_keys(r0["local"], "running_max")
    assert lows and len(lows) == len(highs) == cases.ACTIVATIONS[mode]
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


@modes
def test_a_rank_that_saw_nothing_takes_the_others_ranges(ranks, mode: str) -> None:
    r0, r1 = _scenario(ranks, "uninitialised", mode)
    assert r0["synced"] == r1["synced"] == cases.SYNCED[mode]
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


@modes
def test_different_models_raise_the_same_error_on_every_rank(ranks, mode: str) -> None:
    r0, r1 = _scenario(ranks, "layout_mismatch", mode)
    for result in (r0, r1):
        assert "the ranks' fake-quantizers differ" in result["message"]
        assert "same prepared model" in result["message"]


# -- QAT with DDP --------------------------------------------------------------------------


@modes
@pytest.mark.parametrize("scenario", ["qat_ddp", "qat_ddp_lsq"])
def test_qat_with_ddp_finalizes_identical_models(ranks, scenario: str, mode: str) -> None:
    r0, r1 = _scenario(ranks, scenario, mode)
    assert r0["check_ddp"] and not r0["ddp_warnings"]
    final0, final1 = r0["final"], r1["final"]
    _assert_equal_states(final0, final1)
    for a, b in zip(r0["evals"], r1["evals"], strict=True):
        assert torch.equal(a, b)
    # the weights did train
    q = Quantizer(cases.MLP(), cases.config(mode=mode))
    initial = cases.prepare(q).state_dict()
    key = cases.weight_key(final0, "fc1")
    assert key == cases.weight_key(initial, "fc1")
    assert not torch.equal(final0[key], initial[key])


@modes
@pytest.mark.parametrize("scenario", ["qat_ddp", "qat_ddp_lsq"])
def test_step_syncs_and_no_collective_runs_inside_forward(ranks, scenario: str, mode: str) -> None:
    r0, r1 = _scenario(ranks, scenario, mode)
    lows = _act_keys(r0["pre_step"], "running_min")
    assert any(not torch.equal(r0["pre_step"][k], r1["pre_step"][k]) for k in lows)
    _assert_equal_states(r0["post_step"], r1["post_step"])
    assert r0["forward_allreduce_calls"] == 0
    assert set(r0["step_allreduce_calls"]) == {2}  # the layout check and the ranges


@modes
def test_lsq_parameters_take_the_reduced_qparams_while_observing(ranks, mode: str) -> None:
    r0, r1 = _scenario(ranks, "qat_ddp_lsq", mode)
    lsq0, lsq1 = r0["post_step_lsq"], r1["post_step_lsq"]
    assert len(lsq0) == cases.ACTIVATIONS[mode]
    for name, (param, calc_scale) in lsq0.items():
        assert torch.equal(param, calc_scale), name
        assert torch.equal(param, lsq1[name][0]), name


@modes
def test_broadcasting_other_buffers_makes_conv_bn_models_identical(ranks, mode: str) -> None:
    r0, r1 = _scenario(ranks, "conv_bn_buffers", mode)
    (bn_key,) = r0["bn_before"]
    assert not torch.equal(r0["bn_before"][bn_key], r1["bn_before"][bn_key])
    assert r0["broadcast"] == r1["broadcast"] >= 2
    _assert_equal_states(r0["final"], r1["final"])


@modes
def test_ddp_that_broadcasts_buffers_warns(ranks, mode: str) -> None:
    r0, _ = _scenario(ranks, "ddp_warning", mode)
    assert r0["ok"] is False and r0["ok_explicit"] is False
    ours = [m for m in r0["messages"] if "fake-quantizers" in m]
    assert len(ours) == 3  # check_ddp on the default, sync_observers on it, the explicit True
    assert "broadcast_buffers=False" in ours[0] and "rank 0's buffers" in ours[0]
    assert r0["synced"] == cases.SYNCED[mode]
    assert r0["ok_good"] is True
    assert not [m for m in r0["messages_good"] if "fake-quantizers" in m]


def test_eager_fake_quantizers_are_found_through_parametrizations(ranks) -> None:
    r0, _ = _scenario(ranks, "explicit_moving_average", "eager")
    weights = {k.removesuffix(".running_min") for k in r0["state"] if k.endswith("running_min")}
    assert "fc1.parametrizations.weight.0.qparams_calculator" in weights
    assert "fc2.parametrizations.weight.0.qparams_calculator" in weights


# -- FSDP2 over eager-prepared models ------------------------------------------------------


@pytest.mark.parametrize(
    ("fsdp", "ddp"), [("qat_fsdp", "qat_ddp"), ("qat_fsdp_lsq", "qat_ddp_lsq")]
)
def test_fsdp2_qat_matches_ddp(ranks, fsdp: str, ddp: str) -> None:
    f0, f1 = _scenario(ranks, fsdp, "eager")
    d0, d1 = _scenario(ranks, ddp, "eager")
    assert f0["check_ddp"] and not f0["ddp_warnings"]
    # finalized models (FSDP2 shards all-gathered) identical across ranks ...
    _assert_equal_states(f0["final"], f1["final"])
    # ... and equal to DDP's, every weight, qparam and LSQ parameter
    assert any(".parametrizations.weight.original" in k for k in f0["final"])
    _assert_close_states(f0["final"], d0["final"])
    for rank, (f, d) in enumerate(((f0, d0), (f1, d1))):
        _assert_close_states(f["post_step"], d["post_step"])
        assert len(f["evals"]) == len(d["evals"]) == 3, rank
        for a, b in zip(f["evals"], d["evals"], strict=True):
            torch.testing.assert_close(a, b, rtol=1e-5, atol=1e-6)
    # the inference forwards between steps saw the new weights every time
    assert not torch.equal(f0["evals"][0], f0["evals"][-1])
    assert set(f0["step_allreduce_calls"]) == {2}


def test_fsdp2_conv_bn_matches_ddp(ranks) -> None:
    f0, f1 = _scenario(ranks, "conv_bn_fsdp", "eager")
    d0, _ = _scenario(ranks, "conv_bn_buffers", "eager")
    (bn_key,) = f0["bn_before"]
    assert not torch.equal(f0["bn_before"][bn_key], f1["bn_before"][bn_key])
    assert f0["broadcast"] == d0["broadcast"] >= 2
    _assert_equal_states(f0["final"], f1["final"])
    _assert_close_states(f0["final"], d0["final"])


def test_fsdp2_resharding_lsq_while_observing_raises_on_every_rank(ranks) -> None:
    for result in _scenario(ranks, "fsdp_lsq_resharded", "eager"):
        message = result["message"]
        assert "FSDP2 over LSQ fake-quantizers with the observer on" in message
        assert "fc1.linear_quantize_input" in message
        assert "reshard_after_forward=False" in message


def test_sharding_before_prepare_is_refused(ranks) -> None:
    for result in _scenario(ranks, "shard_before_prepare", "eager"):
        assert result["plain_ok"]
        assert "already sharded by FSDP2" in result["message"]
        assert (
            "apply fully_shard to the model that Quantizer.prepare() returns" in (result["message"])
        )


# -- one process ---------------------------------------------------------------------------


@modes
def test_nothing_syncs_without_a_process_group(monkeypatch: pytest.MonkeyPatch, mode: str) -> None:
    def no_collective(*args: Any, **kwargs: Any) -> None:
        raise AssertionError("no collective may run without a process group")

    monkeypatch.setattr(dist, "all_reduce", no_collective)
    monkeypatch.setattr(dist, "broadcast", no_collective)
    monkeypatch.setattr(dist, "barrier", no_collective)
    assert not dist.is_initialized() and not qdist.is_distributed()
    q = Quantizer(cases.MLP(), cases.config(schedule=QATSchedule(disable_observer=2), mode=mode))
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
