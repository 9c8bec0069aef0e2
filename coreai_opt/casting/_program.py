"""Access to an ``ExportedProgram``'s placeholders, their tensors and the graph's fake mode."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import torch
from torch._guards import detect_fake_mode
from torch.export import ExportedProgram
from torch.export.graph_signature import InputKind, OutputKind
from torch.fx import Node
from torch.utils import _pytree as pytree

_STATE_KINDS = (InputKind.PARAMETER, InputKind.BUFFER, InputKind.CONSTANT_TENSOR)


@dataclass(frozen=True)
class PlaceholderInfo:
    """One graph input: its node, its signature kind and, for state, the tensor's name."""

    node: Node
    kind: InputKind
    target: str | None  # fqn in state_dict / constants; None for user inputs
    persistent: bool | None

    @property
    def is_state(self) -> bool:
        """Whether the program owns the tensor (parameter, buffer or lifted constant)."""
        return self.kind in _STATE_KINDS

    def describe(self) -> str:
        """How warnings name the input: ``parameter 'lin.weight'`` / ``user input 'x'``."""
        if self.kind == InputKind.USER_INPUT:
            return f"user input {self.node.name!r}"
        kind = {
            InputKind.PARAMETER: "parameter",
            InputKind.BUFFER: "buffer",
            InputKind.CONSTANT_TENSOR: "constant",
        }.get(self.kind, self.kind.name.lower())
        return f"{kind} {self.target!r}"


def placeholders(ep: ExportedProgram) -> dict[Node, PlaceholderInfo]:
    """Every placeholder node of ``ep``'s graph with its input spec."""
    specs = {spec.arg.name: spec for spec in ep.graph_signature.input_specs}
    result: dict[Node, PlaceholderInfo] = {}
    for node in ep.graph.nodes:
        if node.op != "placeholder":
            continue
        spec = specs.get(node.name)
        if spec is None:  # not in the signature: leave it alone
            continue
        result[node] = PlaceholderInfo(node, spec.kind, spec.target, spec.persistent)
    return result


def state_tensor(ep: ExportedProgram, info: PlaceholderInfo) -> torch.Tensor | None:
    """The real tensor behind a state placeholder (None for user inputs and script objects)."""
    if not info.is_state or info.target is None:
        return None
    in_state_dict = info.kind == InputKind.PARAMETER or (
        info.kind == InputKind.BUFFER and info.persistent
    )
    value = (ep.state_dict if in_state_dict else ep.constants).get(info.target)
    return value if isinstance(value, torch.Tensor) else None


def replace_state_tensor(ep: ExportedProgram, info: PlaceholderInfo, dtype: torch.dtype) -> None:
    """Store the state tensor behind ``info`` converted to ``dtype``.

    The entry is replaced, never modified: the program shares its parameters with the module
    it was exported from, which must keep its own dtypes. Every other entry holding the same
    tensor object (tied names) is replaced by the same new tensor.
    """
    old = state_tensor(ep, info)
    assert old is not None
    data = old.detach().to(dtype)
    new: torch.Tensor = (
        torch.nn.Parameter(data, requires_grad=old.requires_grad)
        if isinstance(old, torch.nn.Parameter)
        else data
    )
    for table in (ep.state_dict, ep.constants):
        for key, value in list(table.items()):
            if value is old:
                table[key] = new


def mutated_inputs(ep: ExportedProgram) -> dict[int, str]:
    """Output position -> name of the placeholder that output is written back into."""
    by_target = {
        spec.target: spec.arg.name
        for spec in ep.graph_signature.input_specs
        if spec.target is not None
    }
    result: dict[int, str] = {}
    for index, spec in enumerate(ep.graph_signature.output_specs):
        if spec.kind == OutputKind.BUFFER_MUTATION and spec.target in by_target:
            result[index] = by_target[spec.target]
        elif spec.kind == OutputKind.USER_INPUT_MUTATION and spec.target is not None:
            result[index] = spec.target
    return result


def fake_mode_of(ep: ExportedProgram) -> Any:
    """The FakeTensorMode that produced the graph's ``meta['val']`` tensors."""
    vals = [n.meta.get("val") for n in ep.graph.nodes if n.op == "placeholder"]
    mode = detect_fake_mode(vals)
    if mode is None:
        vals = [n.meta.get("val") for n in ep.graph.nodes]
        mode = detect_fake_mode(vals)
    if mode is None:
        raise ValueError(
            "the ExportedProgram's graph carries no fake tensors in node.meta['val']; "
            "cast a program produced by torch.export.export (or torch.export.load)"
        )
    return mode


def update_example_inputs(ep: ExportedProgram, dtypes: dict[str, torch.dtype]) -> None:
    """Convert the stored example inputs of user inputs whose placeholder changed dtype.

    ``torch.export.save`` writes them and users re-run them; they must match the graph.
    Left alone when their flat layout does not line up with the user-input placeholders.
    """
    example = ep.example_inputs
    if example is None or not dtypes:
        return
    flat, spec = pytree.tree_flatten(example)
    user_names = [
        s.arg.name for s in ep.graph_signature.input_specs if s.kind == InputKind.USER_INPUT
    ]
    if len(flat) != len(user_names):
        return
    new_flat = [
        value.to(dtypes[name]) if isinstance(value, torch.Tensor) and name in dtypes else value
        for value, name in zip(flat, user_names, strict=True)
    ]
    ep.example_inputs = pytree.tree_unflatten(new_flat, spec)
