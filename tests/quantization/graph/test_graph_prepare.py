"""Graph-mode prepare: export, FQ placement and naming, errors, train/eval, deepcopy, QAT."""

from __future__ import annotations

import copy
import pickle

import pytest
import torch
from models import ConvBnNet, TwoBlocks
from torch import fx, nn

from coreai_opt.quantization import Quantizer, QuantizerConfig
from coreai_opt.quantization._graph.insert import is_fq_node
from coreai_opt.quantization.config import ExecutionMode


def fq_calls(gm: fx.GraphModule) -> list[tuple[str, str]]:
    """(FQ module, name of the value it reads) for every FQ call, in graph order."""
    return [(str(n.target), n.args[0].name) for n in gm.graph.nodes if is_fq_node(n)]


def test_linear_w8a8_places_input_weight_and_output_fqs() -> None:
    torch.manual_seed(0)
    model = nn.Sequential(nn.Linear(8, 4)).eval()
    x = torch.randn(5, 8)
    gm = Quantizer(model, QuantizerConfig()).prepare((x,))
    assert isinstance(gm, fx.GraphModule)
    calls = fq_calls(gm)
    placeholder = next(n.name for n in gm.graph.nodes if n.op == "placeholder")
    read = [name for _, name in calls]
    assert read[0].endswith("weight")  # weight FQ right after its get_attr
    assert placeholder in read and "linear" in read
    assert len(calls) == 3
    assert torch.allclose(gm(x), model(x), atol=0.05)
    # every FQ node is named like its module
    assert all(n.name == n.target for n in gm.graph.nodes if is_fq_node(n))


def test_conv_bn_relu_has_no_fq_inside_the_pattern() -> None:
    model = ConvBnNet().eval()
    gm = Quantizer(model, QuantizerConfig()).prepare((torch.randn(2, 3, 8, 8),))
    read = {name for _, name in fq_calls(gm)}
    assert "relu" in read
    assert "conv2d" not in read and not any(r.startswith("batch_norm") for r in read)


def test_average_pool_shares_the_fq_of_its_input() -> None:
    model = ConvBnNet().eval()
    gm = Quantizer(model, QuantizerConfig()).prepare((torch.randn(2, 3, 8, 8),))
    pool = next(n for n in gm.graph.nodes if n.name == "adaptive_avg_pool2d")
    before = pool.all_input_nodes[0]
    (after,) = [u for u in pool.users if is_fq_node(u)]
    assert is_fq_node(before) and after.target == before.target  # one module, called twice


def test_prepare_errors() -> None:
    model = nn.Linear(4, 4)
    q = Quantizer(model, QuantizerConfig())
    with pytest.raises(TypeError, match="example_inputs must be a tuple"):
        q.prepare(torch.randn(2, 4))  # type: ignore[arg-type]
    with pytest.raises(ValueError, match="empty tuple"):
        q.prepare(())
    gm = q.prepare((torch.randn(2, 4),))
    with pytest.raises(RuntimeError, match="already prepared"):
        Quantizer(gm, QuantizerConfig()).prepare((torch.randn(2, 4),))


def test_export_failure_names_the_cause_and_hints() -> None:
    class Branchy(nn.Module):
        def forward(self, x: torch.Tensor) -> torch.Tensor:
            if x.sum() > 0:  # data-dependent control flow cannot be exported
                return x * 2
            return x

    with pytest.raises(RuntimeError, match=r"torch\.export\.export") as info:
        Quantizer(Branchy(), QuantizerConfig()).prepare((torch.randn(3),))
    assert "execution_mode='eager'" in str(info.value)
    assert info.value.__cause__ is not None


def test_train_and_eval_switch_dropout_and_batch_norm() -> None:
    torch.manual_seed(0)
    model = ConvBnNet().eval()
    x = torch.randn(4, 3, 8, 8)
    gm = Quantizer(model, QuantizerConfig()).prepare((x,))
    assert not gm.training
    assert torch.equal(gm(x), gm(x))  # eval: no dropout
    gm.train()
    before = gm.bn.running_mean.clone()
    y1, y2 = gm(x), gm(x)
    assert not torch.equal(y1, y2)  # dropout is live
    assert not torch.equal(before, gm.bn.running_mean)  # batch statistics update
    gm.eval()
    assert torch.equal(gm(x), gm(x))


def test_deepcopy_and_pickle_keep_the_prepared_model() -> None:
    model = TwoBlocks().eval()
    model.tag = "kept"
    x = torch.randn(3, 16)
    config = QuantizerConfig(preserved_attributes=["tag"])
    gm = Quantizer(model, config).prepare((x,))
    assert gm.tag == "kept"
    for other in (copy.deepcopy(gm), pickle.loads(pickle.dumps(gm))):
        assert other.tag == "kept"
        assert torch.equal(other(x), gm(x))
        q = Quantizer(model, config)
        with q.calibration_mode(other):
            other(x)


def test_qat_step_trains_through_the_fake_quantizers() -> None:
    torch.manual_seed(0)
    model = ConvBnNet()
    x = torch.randn(4, 3, 8, 8)
    q = Quantizer(model, QuantizerConfig())
    gm = q.prepare((x,))
    opt = torch.optim.SGD(gm.parameters(), lr=0.1)
    with q.training_mode():
        loss = gm(x).square().mean()
        loss.backward()
        opt.step()
    assert gm.conv.weight.grad is not None and gm.conv.weight.grad.abs().sum() > 0
    assert gm.fc.weight.grad is not None


def test_state_dict_round_trip() -> None:
    x = torch.randn(3, 16)
    src = Quantizer(TwoBlocks(), QuantizerConfig()).prepare((x,))
    q = Quantizer(TwoBlocks(), QuantizerConfig())
    dst = q.prepare((x * 3,))
    dst.load_state_dict(src.state_dict())
    assert torch.equal(dst(x), src(x))


def test_compressible_op_names() -> None:
    model = ConvBnNet().eval()
    gm = torch.export.export(model, (torch.randn(2, 3, 8, 8),)).module()
    names = Quantizer.get_compressible_op_names(gm, ExecutionMode.GRAPH)
    assert {"conv2d", "batch_norm", "relu", "linear", "add", "flatten"} <= names
    with pytest.raises(TypeError, match="GraphModule"):
        Quantizer.get_compressible_op_names(model, ExecutionMode.GRAPH)


def test_weight_fqs_name_their_parameter() -> None:
    gm = Quantizer(ConvBnNet().eval(), QuantizerConfig()).prepare((torch.randn(2, 3, 8, 8),))
    names = {
        gm.get_submodule(str(n.target)).tensor_fqn
        for n in gm.graph.nodes
        if is_fq_node(n) and n.args[0].op != "placeholder"
    }
    assert {"conv.weight", "fc.weight"} <= names  # conv.weight through the conv-bn fold
