"""Conv + batch norm in graph mode: the QAT form at prepare, a plain conv at finalize.

QAT form (so the weight FQ sees the weights batch norm will fold into):

    s = gamma / sqrt(running_var + eps)
    y = conv(x, FQ(W * s), None) * (sqrt(running_var + eps) / gamma)  (+ b)
    then the real batch norm on y

which equals conv(x, W, b) before batch norm up to rounding, in train and in eval mode.
At finalize the pair becomes one conv with ``W' = W * s`` and ``b' = (b - mean) * s + beta``
(a bias parameter is created when the conv had none), computed in float32 in the same
order as at prepare and cast back to the conv's dtype; the batch norm is removed.
"""

from __future__ import annotations

import operator
from dataclasses import dataclass

import torch
from torch import fx, nn

from coreai_opt import _ops
from coreai_opt.quantization._graph import op_kinds as k
from coreai_opt.quantization._graph.annotate import Annotations

__all__ = [
    "ConvBnRecord",
    "ConvBnRescale",
    "fold_conv_bn",
    "insert_qat_conv_bn",
    "record_conv_bn",
]

aten = torch.ops.aten
_META_KEY = "coreai_opt_conv_bn"


class ConvBnRescale(nn.Module):
    """``y * inverse[c] + bias[c]`` (channels on dim 1): the QAT form's undoing of the
    batch-norm scale folded into the weight, then the conv's own bias.

    Run eagerly on CPU it is one ``coreai_opt.channel_scale_shift`` call: one pass forward
    and one backward, where the aten product and sum it replaces make five (measured inside
    SmallCNN's uncompiled QAT step: 60-77 us forward and 93-124 us backward for both
    rescales, against 93-113 us and 177-202 us). Everywhere else it is that aten product and
    sum: under torch.compile, which fuses them with their neighbours; under torch.export,
    whose graphs keep plain aten ops; on other devices, whose aten kernels already do the
    work (the op's path there is the same aten math); and when the dtypes differ (aten
    promotes). A module, not a function, so that the branch stays out of FX's symbolic
    tracing (torch.load rebuilds a GraphModule by tracing its code, modules as leaves).
    """

    def forward(
        self, y: torch.Tensor, inverse: torch.Tensor, bias: torch.Tensor | None
    ) -> torch.Tensor:
        """The rescaled conv output (see the class docstring)."""
        same_dtype = inverse.dtype == y.dtype and (bias is None or bias.dtype == y.dtype)
        tracing = torch.compiler.is_compiling() or torch.compiler.is_exporting()
        if same_dtype and y.device.type == "cpu" and not tracing:
            return _ops.channel_scale_shift(y, inverse, bias)
        shape = [1, -1] + [1] * (y.dim() - 2)
        out = y * inverse.reshape(shape)
        return out if bias is None else out + bias.reshape(shape)


@dataclass
class ConvBnRecord:
    """Names of the nodes of one QAT conv-bn pair, kept in ``gm.meta`` for finalize."""

    conv: str
    bn: str
    weight: str  # get_attr node of the conv weight
    weight_target: str
    bias_target: str | None
    gamma: str
    beta: str
    mean: str
    var: str
    eps: float
    transposed: bool


def _tensor(gm: nn.Module, target: str) -> torch.Tensor:
    """The parameter or buffer at the dotted *target* of *gm*."""
    return operator.attrgetter(target)(gm)


def insert_qat_conv_bn(gm: fx.GraphModule, ann: Annotations) -> list[ConvBnRecord]:
    """Rewrite every annotated conv → batch_norm pair of *gm* into the QAT form (in place).

    The weight's state annotation moves from the weight to the folded weight. Pairs whose
    weight is read elsewhere too, or whose batch norm has no affine parameters or no running
    statistics, are left as they are.
    """
    records = []
    for chain in ann.chains:
        if len(chain) < 2 or k.weighted_kind(chain[0]) not in ("conv", "conv_transpose"):
            continue
        conv, bn = chain[0], chain[1]
        if bn.target is not aten.batch_norm.default:
            continue
        _, weight, *rest = conv.args
        bias = rest[0] if rest else None
        _, gamma, beta, mean, var, _, _, eps, _ = bn.args
        nodes = (weight, gamma, beta, mean, var)
        if not all(isinstance(n, fx.Node) and n.op == "get_attr" for n in nodes):
            continue
        state = ann.states.get(weight)
        if len(weight.users) != 1 or state is None or state.spec is None:
            continue
        if bias is not None and not (isinstance(bias, fx.Node) and bias.op == "get_attr"):
            continue
        transposed = k.weighted_kind(conv) == "conv_transpose"
        w_rank = _tensor(gm, str(weight.target)).dim()
        graph = gm.graph
        w_shape = [1, -1] + [1] * (w_rank - 2) if transposed else [-1] + [1] * (w_rank - 1)
        with graph.inserting_before(conv):
            std = graph.call_function(
                aten.sqrt.default, (graph.call_function(aten.add.Tensor, (var, eps)),)
            )
            scale = graph.call_function(aten.div.Tensor, (gamma, std))
            folded = graph.call_function(
                aten.mul.Tensor,
                (weight, graph.call_function(aten.reshape.default, (scale, w_shape))),
            )
        args = list(conv.args)
        args[1] = folded
        if len(args) > 2:
            args[2] = None
        conv.args = tuple(args)
        # y * (1 / s) (+ b) rather than y / s: its backward needs one product and one
        # reduction over y for the gradient of s, where the division's backward makes
        # several full-size passes.
        with graph.inserting_after(conv):
            inverse = graph.call_function(aten.div.Tensor, (std, gamma))
        rescale_name = f"{conv.name}_bn_rescale"
        gm.add_submodule(rescale_name, ConvBnRescale())
        with graph.inserting_after(inverse):
            last = graph.call_module(rescale_name, (conv, inverse, bias))
        bn.replace_input_with(conv, last)
        if "val" in conv.meta:  # conv's shape and dtype (later passes read the rank)
            last.meta["val"] = conv.meta["val"]
        ann.states[folded] = ann.states.pop(weight)
        records.append(
            ConvBnRecord(
                conv=conv.name,
                bn=bn.name,
                weight=weight.name,
                weight_target=str(weight.target),
                bias_target=None if bias is None else str(bias.target),
                gamma=str(gamma.target),
                beta=str(beta.target),
                mean=str(mean.target),
                var=str(var.target),
                eps=float(eps),
                transposed=transposed,
            )
        )
    gm.graph.lint()
    gm.recompile()
    return records


def record_conv_bn(
    gm: fx.GraphModule, records: list[ConvBnRecord], renamed: dict[str, str]
) -> None:
    """Keep *records* in ``gm.meta`` (batch-norm node names updated by *renamed*)."""
    for r in records:
        r.bn = renamed.get(r.bn, r.bn)
    gm.meta[_META_KEY] = [vars(r) for r in records]


def fold_conv_bn(gm: fx.GraphModule) -> int:
    """Fold every QAT conv-bn pair recorded at prepare into a plain conv (in place).

    Returns the number of pairs folded.
    """
    records = [ConvBnRecord(**r) for r in gm.meta.get(_META_KEY, [])]
    by_name = {n.name: n for n in gm.graph.nodes}
    folded = 0
    for r in records:
        conv, bn, weight = by_name.get(r.conv), by_name.get(r.bn), by_name.get(r.weight)
        if conv is None or bn is None or weight is None:
            continue
        w = _tensor(gm, r.weight_target)
        gamma, beta = _tensor(gm, r.gamma).float(), _tensor(gm, r.beta).float()
        mean, var = _tensor(gm, r.mean).float(), _tensor(gm, r.var).float()
        scale = gamma / torch.sqrt(var + r.eps)
        w_shape = [1, -1] + [1] * (w.dim() - 2) if r.transposed else [-1] + [1] * (w.dim() - 1)
        bias = _tensor(gm, r.bias_target).float() if r.bias_target else torch.zeros_like(mean)
        with torch.no_grad():
            new_w = (w.float() * scale.reshape(w_shape)).to(w.dtype)
            new_b = ((bias - mean) * scale + beta).to(w.dtype)
            w.copy_(new_w)
        owner_path, _, _ = r.weight_target.rpartition(".")
        owner = gm.get_submodule(owner_path) if owner_path else gm
        bias_target = r.bias_target or (f"{owner_path}.bias" if owner_path else "bias")
        if r.bias_target:
            with torch.no_grad():
                _tensor(gm, r.bias_target).copy_(new_b)
        else:
            owner.register_parameter(bias_target.rsplit(".", 1)[-1], nn.Parameter(new_b))
        # The weight FQ reads the weight again; the conv gets the folded bias.
        fq_input = conv.args[1]
        if isinstance(fq_input, fx.Node) and fq_input.op == "call_module":
            fq_input.replace_input_with(fq_input.args[0], weight)
        else:
            conv.replace_input_with(conv.args[1], weight)
        with gm.graph.inserting_before(conv):
            bias_node = gm.graph.get_attr(bias_target)
        args = list(conv.args)
        while len(args) < 3:
            args.append(None)
        args[2] = bias_node
        conv.args = tuple(args)
        bn.replace_all_uses_with(conv)
        gm.graph.erase_node(bn)
        folded += 1
    gm.graph.eliminate_dead_code()
    gm.graph.lint()
    gm.delete_all_unused_submodules()
    gm.recompile()
    gm.meta[_META_KEY] = []
    return folded
