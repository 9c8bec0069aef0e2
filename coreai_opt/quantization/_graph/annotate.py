"""Annotation: which spec each tensor slot of an exported graph gets.

Slots are a node's tensor inputs (by position in ``all_input_nodes``), its output, and the
model state it reads (``get_attr`` nodes). Pattern matches are annotated in priority order
(module config level: module_name > module_type > global; then op level: op_name >
op_type > default; then longer pattern; then graph order) and a slot keeps the first spec
it gets. Module boundary specs (``module_input_spec`` / ``module_output_spec`` /
``module_state_spec``) come last and override. A slot set to None was explicitly declined;
a slot absent from the maps was not matched by any config.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field

from torch import fx, nn

from coreai_opt.quantization._graph import op_kinds as k
from coreai_opt.quantization._graph.kv_cache import apply_kv_cache_specs
from coreai_opt.quantization._graph.patterns import AnnotationPattern, annotation_patterns
from coreai_opt.quantization.config import QuantizerConfig
from coreai_opt.quantization.config.resolution import (
    ConfigLevel,
    ResolvedModuleConfig,
    lookup_spec_entry,
    resolve_module_config,
    resolve_op_config,
)
from coreai_opt.quantization.spec import QuantizationSpec

__all__ = ["Annotations", "NodeScope", "SlotSpec", "annotate", "node_scope"]

_LEVEL_RANK = {ConfigLevel.MODULE_NAME: 0, ConfigLevel.MODULE_TYPE: 1, ConfigLevel.GLOBAL: 2}


@dataclass(frozen=True)
class NodeScope:
    """The module an op ran in: its path and type, and its ancestors (root first)."""

    path: str
    module_type: type | str | None
    chain: tuple[tuple[str, type | str | None], ...]

    def contains(self, path: str) -> bool:
        """True when the op ran inside the module at *path* (itself or a descendant)."""
        return path == "" or any(p == path for p, _ in self.chain) or self.path == path


@dataclass(frozen=True)
class SlotSpec:
    """The spec a slot got (None: declined), where from and who owns it."""

    spec: QuantizationSpec | None
    priority: tuple[int, ...]
    owner: tuple[str, type | str | None]


@dataclass
class Annotations:
    """Specs per slot, plus what the placement pass needs to know about matched ops."""

    inputs: dict[tuple[fx.Node, int], SlotSpec] = field(default_factory=dict)
    outputs: dict[fx.Node, SlotSpec] = field(default_factory=dict)
    states: dict[fx.Node, SlotSpec] = field(default_factory=dict)
    shared: dict[fx.Node, str] = field(default_factory=dict)
    matched: dict[fx.Node, AnnotationPattern] = field(default_factory=dict)
    chains: list[list[fx.Node]] = field(default_factory=list)


def node_scope(node: fx.Node, model: nn.Module | None) -> NodeScope:
    """Module scope of *node* from its ``nn_module_stack`` (types from *model* when given)."""
    stack = node.meta.get("nn_module_stack") or {}
    entries: list[tuple[str, type | str | None]] = []
    for value in stack.values():
        path, type_name = value[0], value[1]
        path = "" if path in ("", "L__self__") else str(path)
        mtype: type | str | None = type_name
        if model is not None:
            try:
                mtype = type(model.get_submodule(path))
            except AttributeError:
                mtype = type_name
        entries.append((path, mtype))
    if not entries or entries[0][0] != "":
        entries.insert(0, ("", type(model) if model is not None else None))
    path, mtype = entries[-1]
    return NodeScope(path, mtype, tuple(entries[:-1]))


def _module_config(
    config: QuantizerConfig,
    scope: NodeScope,
    known: Mapping[str, ResolvedModuleConfig],
) -> ResolvedModuleConfig:
    if scope.path in known:
        return known[scope.path]
    return resolve_module_config(config, scope.path, scope.module_type, ancestors=scope.chain)


def _op_level(module_config: object, name: str, op_type: str | None) -> int:
    from coreai_opt.config._keys import compile_regex_key

    for key in getattr(module_config, "op_name_config", {}) or {}:
        if compile_regex_key(key, "op_name_config").fullmatch(name):
            return 0
    if op_type is not None and op_type in (getattr(module_config, "op_type_config", {}) or {}):
        return 1
    return 2


def annotate(
    gm: fx.GraphModule,
    model: nn.Module | None,
    config: QuantizerConfig,
    module_configs: Mapping[str, ResolvedModuleConfig],
) -> Annotations:
    """Specs of every slot of *gm* under *config* (see the module docstring)."""
    ann = Annotations()
    order = {n: i for i, n in enumerate(gm.graph.nodes)}
    candidates = []
    for node in gm.graph.nodes:
        if node.op != "call_function":
            continue
        for pattern in annotation_patterns():
            chain = pattern.match(node)
            if chain is None:
                continue
            scope = node_scope(node, model)
            resolved = _module_config(config, scope, module_configs)
            if resolved.config is None:
                continue
            op_level = _op_level(resolved.config, node.name, k.op_type(node))
            priority = (_LEVEL_RANK[resolved.level], op_level, -len(chain), order[node])
            candidates.append((priority, chain, pattern, resolved, scope))
    candidates.sort(key=lambda c: c[0])
    taken: set[fx.Node] = set()
    for priority, chain, pattern, resolved, scope in candidates:
        if any(n in taken for n in chain):
            continue
        taken.update(chain)
        op_config = resolve_op_config(resolved.config, chain[0].name, k.op_type(chain[0]))
        owner = (scope.path, scope.module_type)
        for n in chain:
            ann.matched[n] = pattern
        ann.chains.append(chain)
        _annotate_chain(ann, chain, pattern, op_config, priority, owner)
    _annotate_module_boundaries(ann, gm, model, module_configs)
    apply_kv_cache_specs(ann, gm, config)
    return ann


def _annotate_chain(
    ann: Annotations,
    chain: list[fx.Node],
    pattern: AnnotationPattern,
    op_config: object,
    priority: tuple[int, ...],
    owner: tuple[str, type | str | None],
) -> None:
    first, last = chain[0], chain[-1]
    if pattern.kind == "shared":
        ann.shared[first] = pattern.name
    input_specs = op_config.op_input_spec  # type: ignore[attr-defined]
    for index, inp in enumerate(k.tensor_inputs(first)):
        if not k.is_float_value(inp) and inp.op != "get_attr":
            continue
        if inp.op == "get_attr":
            if isinstance(index, int) and index in input_specs:
                raise RuntimeError(
                    f"op_input_spec of op {first.name!r} has index {index}, which points at the "
                    f"state tensor {inp.target!r}; configure state tensors with op_state_spec "
                    f"(by name, e.g. {{'{str(inp.target).rsplit('.', 1)[-1]}': spec}})"
                )
            local = str(inp.target).rsplit(".", 1)[-1]
            found, spec = lookup_spec_entry(op_config.op_state_spec, local)  # type: ignore[attr-defined]
            if found and inp not in ann.states:
                ann.states[inp] = SlotSpec(spec, priority, owner)
            continue
        found, spec = lookup_spec_entry(input_specs, index)
        if found and (first, index) not in ann.inputs:
            ann.inputs[(first, index)] = SlotSpec(spec, priority, owner)
    if k.is_float_value(last):
        found, spec = lookup_spec_entry(op_config.op_output_spec, 0)  # type: ignore[attr-defined]
        if found and last not in ann.outputs:
            ann.outputs[last] = SlotSpec(spec, priority, owner)


def _annotate_module_boundaries(
    ann: Annotations,
    gm: fx.GraphModule,
    model: nn.Module | None,
    module_configs: Mapping[str, ResolvedModuleConfig],
) -> None:
    """module_input_spec / module_output_spec / module_state_spec of directly matched modules."""
    boundary = [
        (path, r)
        for path, r in module_configs.items()
        if r.config is not None and r.owner == path and r.config.has_module_specs()
    ]
    # module_type configs first, then module_name configs, so name wins.
    boundary.sort(key=lambda item: -_LEVEL_RANK[item[1].level])
    scopes = {n: node_scope(n, model) for n in gm.graph.nodes if n.op == "call_function"}
    for path, resolved in boundary:
        cfg = resolved.config
        owner = (path, type(model.get_submodule(path)) if model is not None else None)
        priority = (-1, -1, 0, 0)
        inside = [n for n, s in scopes.items() if s.contains(path) and path != ""]
        if path == "":
            inside = list(scopes)
        inside_set = set(inside)
        edges = [
            (n, i)
            for n in inside
            for i, inp in enumerate(k.tensor_inputs(n))
            if inp.op != "get_attr" and inp not in inside_set and k.is_float_value(inp)
        ]
        for idx, (n, i) in enumerate(edges):
            found, spec = lookup_spec_entry(cfg.module_input_spec, idx)
            if found:
                ann.inputs[(n, i)] = SlotSpec(spec, priority, owner)
        outs = [n for n in inside if any(u not in inside_set for u in n.users)]
        outs = [n for n in outs if k.is_float_value(n)]
        for idx, n in enumerate(outs):
            found, spec = lookup_spec_entry(cfg.module_output_spec, idx)
            if found:
                ann.outputs[n] = SlotSpec(spec, priority, owner)
        prefix = "" if path == "" else path + "."
        for node in gm.graph.nodes:
            if node.op == "get_attr" and str(node.target).startswith(prefix):
                local = str(node.target)[len(prefix) :]
                if "." in local:
                    continue
                found, spec = lookup_spec_entry(cfg.module_state_spec, local)
                if found:
                    ann.states[node] = SlotSpec(spec, priority, owner)
