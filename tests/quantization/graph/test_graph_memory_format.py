"""Fake-quantizers at a convolution's input or output take channels_last inputs when the
prepared model runs under torch.compile on CPU (coreai_opt/quantization/_graph/
memory_format.py); the mark is never read uncompiled or by torch.export."""

from __future__ import annotations

import copy

import torch
from models import ConvBnNet, TwoConvs
from torch import nn

from coreai_opt.quantization import Quantizer, QuantizerConfig
from coreai_opt.quantization._graph.insert import is_fq_node


def _marked(gm: torch.fx.GraphModule) -> dict[str, str]:
    """{input node name: FQ name} of the marked fake-quantizer calls."""
    return {
        str(n.args[0]): str(n.target)
        for n in gm.graph.nodes
        if is_fq_node(n) and gm.get_submodule(str(n.target))._compile_channels_last
    }


class ConvPoolConvHead(nn.Module):
    """conv-bn-relu, max-pool, conv-relu, max-pool, flatten, linear."""

    def __init__(self) -> None:
        super().__init__()
        self.conv1 = nn.Conv2d(3, 8, 3, padding=1)
        self.bn1 = nn.BatchNorm2d(8)
        self.conv2 = nn.Conv2d(8, 8, 3, padding=1)
        self.fc = nn.Linear(8 * 2 * 2, 4)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = nn.functional.max_pool2d(torch.relu(self.bn1(self.conv1(x))), 2)
        x = nn.functional.max_pool2d(torch.relu(self.conv2(x)), 2)
        return self.fc(x.flatten(1))


class ConvThenView(nn.Module):
    """A conv output viewed (a view needs the traced strides)."""

    def __init__(self) -> None:
        super().__init__()
        self.conv = nn.Conv2d(3, 4, 3, padding=1)
        self.fc = nn.Linear(4 * 8 * 8, 2)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        y = torch.relu(self.conv(x))
        return self.fc(y.view(y.shape[0], -1))


def _prepare(model: nn.Module, x: torch.Tensor) -> tuple[Quantizer, torch.fx.GraphModule]:
    q = Quantizer(model, QuantizerConfig())
    return q, q.prepare((x,))


def test_activations_next_to_convolutions_are_marked() -> None:
    _, gm = _prepare(ConvPoolConvHead(), torch.randn(2, 3, 8, 8))
    # The input (feeds conv1) and both ReLU outputs (a conv's output through batch norm /
    # ReLU; the second one after the last conv, where Inductor stops carrying the layout).
    assert set(_marked(gm)) == {"x", "relu", "relu_1"}
    linear_fqs = [
        str(n.target)
        for n in gm.graph.nodes
        if is_fq_node(n) and any(u.name.startswith("linear") for u in n.users)
    ]
    assert linear_fqs and not set(linear_fqs) & set(_marked(gm).values())


def test_the_conv_bn_qat_form_after_the_last_convolution_is_followed() -> None:
    """conv-bn-relu as the last convolution block (its output reaches the fake-quantizer
    through the QAT form's rescale and batch norm): marked, as in the benchmark's CNN."""
    _, gm = _prepare(ConvBnNet(), torch.randn(2, 3, 8, 8))
    assert set(_marked(gm)) >= {"x", "relu"}


def test_views_and_outputs_keep_the_traced_layout() -> None:
    """A channels_last input makes every 4-D tensor computed from it channels_last (conv
    outputs too), so nothing is marked upstream of a view or of a 4-D model output."""
    for make in (ConvThenView, TwoConvs):
        _, gm = _prepare(make(), torch.randn(2, 3, 8, 8))
        assert sum(1 for n in gm.graph.nodes if is_fq_node(n)) >= 3
        assert _marked(gm) == {}, make.__name__


def test_no_convolution_no_mark() -> None:
    _, gm = _prepare(nn.Sequential(nn.Linear(8, 8), nn.ReLU()), torch.randn(4, 8))
    assert _marked(gm) == {}


def _unmarked(gm: torch.fx.GraphModule) -> torch.fx.GraphModule:
    out = copy.deepcopy(gm)
    for m in out.modules():
        if getattr(m, "_compile_channels_last", False):
            m._compile_channels_last = False
    return out


def test_compiled_marked_model_matches_the_unmarked_one() -> None:
    """Under Inductor the marked fake-quantizers run channels_last: the outputs, their
    strides (those of the uncompiled model), the QAT gradients and the fake-quantizer state
    equal those of the same compiled model without the marks; a view after a conv (no
    marks) compiles with fullgraph=True."""
    torch._dynamo.reset()
    torch.manual_seed(0)
    x = torch.randn(2, 3, 8, 8)
    for make in (ConvPoolConvHead, ConvThenView):
        model = make()
        _, eager = _prepare(model, x)
        runs = []
        for gm in (copy.deepcopy(eager), _unmarked(eager)):
            compiled = torch.compile(gm, fullgraph=True)
            with Quantizer(model, QuantizerConfig()).training_mode(gm):
                out = compiled(x)
                out.square().mean().backward()
            runs.append((gm, out))
        (marked, out_m), (plain, out_p) = runs
        assert out_m.stride() == eager(x).stride()
        torch.testing.assert_close(out_m, out_p, rtol=1e-5, atol=1e-6)
        for a, b in zip(marked.parameters(), plain.parameters(), strict=True):
            torch.testing.assert_close(a.grad, b.grad, rtol=1e-5, atol=1e-6)
        for a, b in zip(marked.buffers(), plain.buffers(), strict=True):
            torch.testing.assert_close(a, b, rtol=1e-5, atol=1e-6)


def test_export_keeps_the_traced_layout() -> None:
    x = torch.randn(2, 3, 8, 8)
    _, gm = _prepare(ConvPoolConvHead().eval(), x)
    assert _marked(gm)
    exported = torch.export.export(gm, (x,))
    for node in exported.graph_module.graph.nodes:
        assert node.kwargs.get("memory_format") is not torch.channels_last, node.format_node()
    torch.testing.assert_close(exported.module()(x), gm(x))


def test_the_mark_survives_deepcopy_and_pickling(tmp_path: object) -> None:
    _, gm = _prepare(ConvPoolConvHead(), torch.randn(2, 3, 8, 8))
    path = f"{tmp_path}/gm.pt"
    torch.save(gm, path)
    for copy_ in (copy.deepcopy(gm), torch.load(path, weights_only=False)):
        assert set(_marked(copy_).values()) == set(_marked(gm).values())
