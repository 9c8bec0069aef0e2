"""Conv + batch norm: QAT form at prepare, folded into one conv at finalize (§7 formula)."""

from __future__ import annotations

import pytest
import torch
from models import ConvBnNet
from torch import nn

from coreai_opt._export_backend import ExportBackend
from coreai_opt.quantization import Quantizer, QuantizerConfig
from coreai_opt.quantization._graph.conv_bn import ConvBnRescale
from coreai_opt.quantization._graph.insert import is_fq_node


class ConvTBn(nn.Module):
    """conv_transpose2d (no bias) → batch norm → relu."""

    def __init__(self) -> None:
        super().__init__()
        self.up = nn.ConvTranspose2d(4, 6, 2, stride=2, bias=False)
        self.bn = nn.BatchNorm2d(6)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return torch.relu(self.bn(self.up(x)))


def _trained_stats(model: nn.Module, x: torch.Tensor) -> nn.Module:
    """Gives the batch norms non-trivial running statistics and affine parameters."""
    torch.manual_seed(1)
    for m in model.modules():
        if isinstance(m, nn.BatchNorm2d):
            m.weight.data.uniform_(0.5, 2.0)
            m.bias.data.uniform_(-1.0, 1.0)
    model.train()
    with torch.no_grad():
        for _ in range(3):
            model(x)
    return model.eval()


@pytest.mark.parametrize(
    ("make", "shape"), [(ConvBnNet, (4, 3, 8, 8)), (ConvTBn, (2, 4, 5, 5))], ids=["conv", "convT"]
)
def test_weight_fq_sees_folded_weights_and_finalize_folds_exactly(make, shape) -> None:
    torch.manual_seed(0)
    x = torch.randn(shape)
    model = _trained_stats(make(), x)
    q = Quantizer(model, QuantizerConfig())
    gm = q.prepare((x,))
    # The weight FQ reads W * gamma / sqrt(var + eps), not W.
    weight_fq = next(n for n in gm.graph.nodes if is_fq_node(n) and n.args[0].op == "call_function")
    assert weight_fq.args[0].target is torch.ops.aten.mul.Tensor
    bn = model.bn
    scale = bn.weight / torch.sqrt(bn.running_var + bn.eps)
    conv = model.conv if hasattr(model, "conv") else model.up
    fq = gm.get_submodule(str(weight_fq.target))
    w_shape = (-1, 1, 1, 1) if isinstance(conv, nn.Conv2d) else (1, -1, 1, 1)
    folded = conv.weight * scale.reshape(w_shape)
    axis = fq.granularity.axis  # the default weight spec pins axis 0
    amax = folded.detach().abs().amax(dim=[d for d in range(4) if d != axis])
    torch.testing.assert_close(fq.qparams_calculator.scale.flatten(), amax / 127.5)
    # A QAT step, then finalize: one conv, no batch norm, same outputs.
    with q.training_mode():
        gm(x).sum().backward()
    gm.eval()
    before = gm(x)
    fin = q.finalize(backend=ExportBackend._TORCH)
    targets = [n.target for n in fin.graph.nodes if n.op == "call_module"]
    assert not any("batch_norm" in str(t) for t in targets)
    assert not any(n.target is torch.ops.aten.div.Tensor for n in fin.graph.nodes)
    torch.testing.assert_close(fin(x), before, rtol=1e-5, atol=1e-5)


def test_unquantized_conv_bn_is_left_alone() -> None:
    x = torch.randn(2, 3, 8, 8)
    model = _trained_stats(ConvBnNet(), x)
    config = QuantizerConfig(module_type_configs={nn.Conv2d: None})
    gm = Quantizer(model, config).prepare((x,))
    assert not any(n.target is torch.ops.aten.sqrt.default for n in gm.graph.nodes)
    torch.testing.assert_close(gm(x), model(x), rtol=0.05, atol=0.05)


@pytest.mark.parametrize(
    ("make", "shape"), [(ConvBnNet, (4, 3, 8, 8)), (ConvTBn, (2, 4, 5, 5))], ids=["conv", "convT"]
)
def test_qat_rescale_runs_one_op_eagerly_and_aten_ops_when_traced(make, shape) -> None:
    """The rescale after the conv is coreai_opt.channel_scale_shift in an eager QAT step and
    aten's product (and sum, with a bias) under export; both give the same output and
    gradients as the aten form."""
    torch.manual_seed(0)
    x = torch.randn(shape)
    model = _trained_stats(make(), x)
    gm = Quantizer(model, QuantizerConfig()).prepare((x,))
    gm.train()
    rescales = [n for n in gm.graph.nodes if n.op == "call_module" and "bn_rescale" in n.target]
    assert len(rescales) == 1
    rescale = gm.get_submodule(rescales[0].target)
    assert isinstance(rescale, ConvBnRescale)
    # The module against the aten form, forward and backward.
    y = torch.randn(shape[0], 6, 4, 4) if make is ConvBnNet else torch.randn(2, 6, 10, 10)
    inverse, bias = torch.rand(6) + 0.5, torch.randn(6)
    ours = [t.clone().requires_grad_() for t in (y, inverse, bias)]
    theirs = [t.clone().requires_grad_() for t in (y, inverse, bias)]
    got = rescale(*ours)
    want = theirs[0] * theirs[1].view(1, -1, 1, 1) + theirs[2].view(1, -1, 1, 1)
    assert torch.equal(got, want)
    g = torch.randn_like(y)
    got.backward(g)
    want.backward(g)
    assert torch.equal(ours[0].grad, theirs[0].grad)
    for a, b in zip(ours[1:], theirs[1:], strict=True):
        torch.testing.assert_close(a.grad, b.grad, rtol=1e-5, atol=1e-5)
    # Exported, the QAT graph holds aten ops there and no channel_scale_shift.
    exported = torch.export.export(gm, (x,)).graph_module
    targets = {n.target for n in exported.graph.nodes if n.op == "call_function"}
    assert torch.ops.coreai_opt.channel_scale_shift.default not in targets
    assert torch.ops.aten.mul.Tensor in targets
