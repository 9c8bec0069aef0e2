"""The CPU build: one OpenMP runtime, real parallelism, per-ISA kernels that agree, and the
torch-version guard of the loader."""

from __future__ import annotations

import os
import re
import subprocess
import sys
from pathlib import Path

import pytest
import torch

import coreai_opt
from coreai_opt._loader import check_torch_version

OPS = torch.ops.coreai_opt


_OPENMP_SCRIPT = """
import os, re, sys, torch, coreai_opt
torch.ops.coreai_opt.fake_quantize_int(torch.randn(1 << 16), torch.tensor(0.1), None, None, -8, 7)
found = set()
for line in open("/proc/self/maps").read().splitlines():
    path = line.split()[-1]
    if re.search(r"lib(g|i|)omp[^/]*[.]so", os.path.basename(path)):
        found.add(os.path.realpath(path))
print("\\n".join(sorted(found)))
"""


def test_one_openmp_runtime_is_loaded() -> None:
    """The library binds to the OpenMP runtime torch ships; a second one would oversubscribe.

    Checked in a fresh process that loads only torch and this library (other packages in
    a test session, scikit-learn for one, may bring their own runtime).
    """
    out = subprocess.run(
        [sys.executable, "-c", _OPENMP_SCRIPT], capture_output=True, text=True, check=True
    ).stdout
    libs = [line for line in out.splitlines() if line]
    assert len(libs) == 1, f"expected one OpenMP runtime, found {libs}"


def test_kernels_run_parallel_regions() -> None:
    """at::parallel_for in the kernels is real OpenMP, not the serial fallback it becomes
    without -fopenmp: the library calls GOMP_parallel (whose runtime is torch's, see above).

    Read from the library's dynamic symbols rather than timed, so machine load cannot
    decide it.
    """
    so = next(Path(coreai_opt.__file__).parent.glob("_C*.so"))
    symbols = subprocess.run(
        ["nm", "-D", "--undefined-only", str(so)], capture_output=True, text=True, check=True
    ).stdout
    assert re.search(r"\bGOMP_parallel\b", symbols), "the kernels were built without OpenMP"


def _forceable_isas() -> list[str]:
    """ATEN_CPU_CAPABILITY values this processor can run: the portable build and every vector
    ISA up to the best one ATen picks by itself."""
    best = torch.backends.cpu.get_cpu_capability()
    order = ["default", "avx2", "avx512"]
    if best.lower() not in order:  # another architecture: its vector build against portable
        return ["default"]
    return order[: order.index(best.lower()) + 1]


_SMALL_CASES_SCRIPT = """
import sys, torch, coreai_opt
ops = torch.ops.coreai_opt
inputs = torch.load(sys.argv[1])
out = {"isa": ops.cpu_kernel_isa()}
for dtype in (torch.float32, torch.bfloat16, torch.float16):
    x = inputs["x"].to(dtype)
    key = str(dtype)
    out[key + "int"] = ops.fake_quantize_int(x, inputs["s"], inputs["zp"], None, -8, 7)
    out[key + "minval"] = ops.fake_quantize_int(x, inputs["s"], None, inputs["mv"], -8, 7)
    out[key + "bw"] = ops.fake_quantize_int_backward(x, x, inputs["s"], inputs["zp"], None, -8, 7)
    # A grad laid out unlike x: copied into x's order in 16 x 16 tiles, ragged at the edges.
    g_t = x.t().contiguous().t()
    out[key + "bw_t"] = ops.fake_quantize_int_backward(
        g_t, x, inputs["s"], inputs["zp"], None, -8, 7
    )
    for fmt in (torch.float8_e4m3fn, torch.float8_e5m2, torch.float4_e2m1fn_x2):
        out[key + str(fmt)] = ops.fake_quantize_float(x, inputs["s"], fmt)
    out[key + "minmax"] = ops.minmax(x, [1, 37])
    out[key + "lsq"] = ops.fake_quantize_lsq_backward(
        x, x, inputs["s"], inputs["zp"].float(), -8, 7, 1.0
    )
    # Runs longer than one reduction chunk, with tails of every length mod 16 and 32.
    long = inputs["long"].to(dtype)
    for n in (1024, 1040, 1057, 2075):
        xl = long[:, :n].contiguous()
        out[key + f"lsq_rows_{n}"] = ops.fake_quantize_lsq_backward(
            xl, -xl, inputs["s"][:, :1], inputs["zp"][:, :1].float(), 0, 15, 0.5
        )
    out[key + "lsq_tensor"] = ops.fake_quantize_lsq_backward(
        long, long, inputs["s"][0, 0], inputs["zp"][0, 0].float(), -8, 7, 1.0
    )
# The float32 forward with the straight-through mask and its backward (vector mask stores
# and loads per ISA), per channel over runs with tails, int and float formats.
x = inputs["x"]
rows = x.shape[0]
for fmt, qmin, qmax in ((torch.int4, -8, 7), (torch.float8_e4m3fn, 0, 0)):
    state = [torch.full((rows, 1), float("inf")), torch.full((rows, 1), -float("inf")),
             torch.ones(rows, 1), torch.zeros(rows, 1, dtype=torch.int32), torch.zeros(rows, 1)]
    on, off = torch.ones(1, dtype=torch.bool), torch.zeros(1, dtype=torch.bool)
    args = ([1, x.shape[1]], fmt, qmin, qmax, True, False, False, "static")
    ops.fused_fake_quantize(x.nan_to_num(0.0, 0.0, 0.0), on, off, *state, *args)  # qparams
    y, mask = ops.fused_fake_quantize_cachemask(x * 1.5, off, on, *state, *args)
    out[f"cachemask_{fmt}"] = (y, mask.to(torch.uint8))
    out[f"mask_bw_{fmt}"] = ops.fake_quantize_mask_backward(x, mask)
    out[f"mask_bw_t_{fmt}"] = ops.fake_quantize_mask_backward(x, mask.t().contiguous().t())
# channel_scale_shift: planes whose length leaves tails past the 16 sum lanes (37 * 3 = 111;
# 2075 > one 1024-element flush), and channels_last rows of 37 channels.
long = inputs["long"]
for name, xc in (
    ("planes", x.view(8, 3, 37, 3)),
    ("long_planes", long.view(8, 3, 2075)),
    ("rows", x.view(24, 37, 3, 1).contiguous(memory_format=torch.channels_last)),
):
    c = xc.shape[1]
    sc, sh = inputs["s"].flatten()[:c].contiguous(), inputs["mv"].flatten()[:c].contiguous()
    out[f"css_{name}"] = ops.channel_scale_shift(xc, sc, sh)
    out[f"css_bw_{name}"] = ops.channel_scale_shift_backward(-xc * 0.5, xc, sc)
torch.save(out, sys.argv[2])
"""


def _isa_outputs(script: str, inputs: dict, isa: str | None, tmp_path: Path) -> dict:
    """Runs `script` on `inputs` in a subprocess, optionally forcing ATen's CPU capability.

    The inputs are made here, once: torch.randn itself gives other bits under another ISA.
    """
    src, dst = tmp_path / "in.pt", tmp_path / f"out_{isa}.pt"
    if not src.exists():
        torch.save(inputs, src)
    env = dict(os.environ)
    env.pop("ATEN_CPU_CAPABILITY", None)
    if isa is not None:
        env["ATEN_CPU_CAPABILITY"] = isa
    subprocess.run([sys.executable, "-c", script, str(src), str(dst)], env=env, check=True)
    return torch.load(dst)


def _assert_outputs_equal(want: dict, got: dict, label: str) -> None:
    """Every value equal bit for bit (NaN where NaN, -0 kept)."""
    assert want.keys() == got.keys()
    for key, value in want.items():
        other = got[key]
        pairs = zip(value, other, strict=True) if isinstance(value, tuple) else [(value, other)]
        for a, b in pairs:
            if isinstance(a, str):
                assert a == b, f"{label}: {key}"
                continue
            torch.testing.assert_close(a, b, rtol=0, atol=0, equal_nan=True, msg=f"{label}: {key}")
            finite = ~a.isnan()
            assert torch.equal(a[finite].signbit(), b[finite].signbit()), f"{label}: {key} (-0)"


def test_every_isa_gives_the_same_bits(tmp_path: Path) -> None:
    """DEFAULT (scalar at::vec), AVX2 and AVX512, each forced where this processor has it,
    and the build ATen picks by itself all give the same bits, reductions included."""
    torch.manual_seed(0)
    x = torch.randn(24, 37 * 3) * 3
    x[0, :5] = torch.tensor([float("nan"), float("inf"), -float("inf"), -0.0, 0.0])
    inputs = {
        "x": x,
        "long": torch.randn(24, 2075) * 3,
        "s": torch.rand(24, 3) * 0.5 + 0.01,
        "zp": torch.randint(-3, 3, (24, 3), dtype=torch.int32),
        "mv": -torch.rand(24, 3),
    }
    portable = _isa_outputs(_SMALL_CASES_SCRIPT, inputs, "default", tmp_path)
    assert portable.pop("isa") == "DEFAULT"
    for isa in [*_forceable_isas()[1:], None]:
        got = _isa_outputs(_SMALL_CASES_SCRIPT, inputs, isa, tmp_path)
        name = got.pop("isa")
        if isa is not None:
            assert name == isa.upper()
        _assert_outputs_equal(portable, got, f"DEFAULT vs {name}")


# Outputs of 16 MiB and more: the AVX2 build streams them (test_ops_large_outputs.py checks
# their bits against the reference; this checks that every ISA agrees, LSQ sums included).
# Each output is reduced to a digest of its bits (NaNs as one pattern) to keep files small.
_LARGE_CASES_SCRIPT = """
import hashlib, sys, torch, coreai_opt
ops = torch.ops.coreai_opt
inputs = torch.load(sys.argv[1])
big = inputs["x"]
ints = {torch.float32: torch.int32, torch.bfloat16: torch.int16}

def digest(t):
    t = t.contiguous()
    bits = t.view(ints[t.dtype]).clone()
    bits[t.isnan()] = -1
    return hashlib.sha256(bits.numpy().tobytes()).hexdigest()

layouts = {
    "tensor": (big.view(-1)[:4_194_311], inputs["s"][:1, :1].reshape(1), 1),
    "rows": (big.view(-1)[: 2048 * 2048].view(2048, 2048), inputs["s"][:2048, :1], 1),
    "blocks": (big.view(-1)[: 2048 * 2048].view(2048, 2048), inputs["s"][:2048, :64], 64),
    "odd_rows": (big, inputs["s"][:, :1], 1),
}
out = {"isa": ops.cpu_kernel_isa()}
for name, (x, s, _) in layouts.items():
    zp = inputs["zp"][: s.shape[0], : s.shape[-1]].reshape(s.shape)
    for dtype in (torch.float32, torch.bfloat16):
        xd = x.to(dtype) if dtype == torch.float32 else torch.cat([x, -x]).to(dtype)
        sd = s if dtype == torch.float32 or s.dim() == 1 else torch.cat([s, s])
        zd = zp if dtype == torch.float32 or zp.dim() == 1 else torch.cat([zp, zp])
        key = f"{name}_{dtype}"
        out[key + "_fwd"] = digest(ops.fake_quantize_int(xd, sd, zd, None, -8, 7))
        out[key + "_bwd"] = digest(ops.fake_quantize_int_backward(xd, xd, sd, zd, None, -8, 7))
        gx, gs, gz = ops.fake_quantize_lsq_backward(-xd, xd, sd, zd.float(), 0, 15, 0.5)
        out[key + "_lsq"] = (digest(gx), gs, gz)
    out[name + "_fp8"] = digest(ops.fake_quantize_float(x, s, torch.float8_e4m3fn))
    out[name + "_fp4"] = digest(ops.fake_quantize_float(x, s, torch.float4_e2m1fn_x2))
torch.save(out, sys.argv[2])
"""


def test_every_isa_gives_the_same_bits_on_large_outputs(tmp_path: Path) -> None:
    """The same on outputs of 16 MiB and more (streaming stores, aligned and odd rows)."""
    torch.manual_seed(3)
    x = torch.randn(4099, 1031) * 3
    x.view(-1)[::9973] = float("nan")
    x.view(-1)[5::7919] = -0.0
    inputs = {
        "x": x,
        "s": torch.rand(4099, 64) * 0.1 + 0.01,
        "zp": torch.randint(-4, 4, (4099, 64), dtype=torch.int32),
    }
    portable = _isa_outputs(_LARGE_CASES_SCRIPT, inputs, "default", tmp_path)
    assert portable.pop("isa") == "DEFAULT"
    for isa in _forceable_isas()[1:]:
        got = _isa_outputs(_LARGE_CASES_SCRIPT, inputs, isa, tmp_path)
        assert got.pop("isa") == isa.upper()
        _assert_outputs_equal(portable, got, f"DEFAULT vs {isa.upper()}")


def test_library_refuses_another_torch() -> None:
    """A build made for another torch is refused before loading, with the fix in the text."""
    with pytest.raises(ImportError) as info:
        check_torch_version("2.99.0", torch.__version__)
    text = str(info.value)
    assert "2.99.0" in text and torch.__version__ in text
    assert "pip install --no-build-isolation -e ." in text


def test_library_accepts_its_own_torch() -> None:
    """The recorded version of this build is the running torch."""
    from coreai_opt._build_info import TORCH_VERSION

    check_torch_version(TORCH_VERSION, torch.__version__)
