"""``.train()`` / ``.eval()`` for exported graphs.

``torch.export`` bakes the training flag of dropout and batch norm into the graph as a
constant argument. These calls are moved into small parameter-free modules that read
their own ``training`` flag, so ``GraphModule.train()`` / ``.eval()`` switch them like
any ``nn.Module``, and the switch survives deepcopy, pickling and re-export.
"""

from __future__ import annotations

import torch
from torch import fx, nn

__all__ = ["TrainEvalBatchNorm", "TrainEvalDropout", "make_train_eval_switchable"]

aten = torch.ops.aten


class TrainEvalDropout(nn.Module):
    """``aten.dropout`` / ``aten.feature_dropout`` that follows ``self.training``."""

    def __init__(self, p: float, feature: bool) -> None:
        """Drop probability *p*; *feature* selects channel-wise (feature) dropout."""
        super().__init__()
        self.p = float(p)
        self.feature = bool(feature)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """Dropout of *x* in train mode, identity in eval mode."""
        if self.feature:
            return aten.feature_dropout(x, self.p, self.training)
        return aten.dropout(x, self.p, self.training)

    def extra_repr(self) -> str:
        """p and kind."""
        return f"p={self.p}, feature={self.feature}"


class TrainEvalBatchNorm(nn.Module):
    """``aten.batch_norm`` that uses batch statistics (and updates the running ones) in
    train mode and the running statistics in eval mode."""

    def __init__(self, momentum: float, eps: float, cudnn_enabled: bool) -> None:
        """The batch norm's momentum, eps and cuDNN flag as exported."""
        super().__init__()
        self.momentum = float(momentum)
        self.eps = float(eps)
        self.cudnn_enabled = bool(cudnn_enabled)

    def forward(
        self,
        x: torch.Tensor,
        weight: torch.Tensor | None,
        bias: torch.Tensor | None,
        running_mean: torch.Tensor | None,
        running_var: torch.Tensor | None,
    ) -> torch.Tensor:
        """Batch norm of *x* with the module's training flag."""
        return aten.batch_norm(
            x,
            weight,
            bias,
            running_mean,
            running_var,
            self.training,
            self.momentum,
            self.eps,
            self.cudnn_enabled,
        )

    def extra_repr(self) -> str:
        """momentum and eps."""
        return f"momentum={self.momentum}, eps={self.eps}"


def _replace(gm: fx.GraphModule, node: fx.Node, module: nn.Module, args: tuple) -> str:
    name = f"{node.name}_train_eval"
    gm.add_submodule(name, module)
    with gm.graph.inserting_before(node):
        new = gm.graph.call_module(name, args)
    new.meta = dict(node.meta)
    node.replace_all_uses_with(new)
    gm.graph.erase_node(node)
    return new.name


def make_train_eval_switchable(gm: fx.GraphModule) -> dict[str, str]:
    """Move dropout and batch norm calls of *gm* into train/eval-aware modules (in place),
    and give it back ``nn.Module``'s own ``train`` / ``eval`` (the unlifted export module
    replaces them with methods that refuse). Returns old node name → new node name."""
    for name in ("train", "eval"):
        gm.__dict__.pop(name, None)
    renamed: dict[str, str] = {}
    for node in list(gm.graph.nodes):
        if node.op != "call_function":
            continue
        target = node.target
        if target in (aten.dropout.default, aten.feature_dropout.default):
            x, p = node.args[0], node.args[1]
            module = TrainEvalDropout(p, target is aten.feature_dropout.default)
            renamed[node.name] = _replace(gm, node, module, (x,))
        elif target is aten.batch_norm.default:
            x, w, b, mean, var, _, momentum, eps, cudnn = node.args
            module = TrainEvalBatchNorm(momentum, eps, cudnn)
            renamed[node.name] = _replace(gm, node, module, (x, w, b, mean, var))
    gm.graph.lint()
    gm.recompile()
    return renamed
