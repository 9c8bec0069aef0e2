"""Where eager mode puts fake-quantizers: from a :class:`Recording` and the config.

Rules (the reference's, see behaviour.md §6 and §12):

* The config of an op is that of the module that ran it: ``op_name_config`` (regex on
  ``"<module>.<op>"``) > ``op_type_config`` (registry key) > the module's op defaults.
  Optional op types are quantized only when a config names them.
* Tensor arguments that are parameters / buffers of the model are states: one
  fake-quantizer per tensor object, attached with ``torch.nn.utils.parametrize`` to every
  owner; the spec is the first ``module_state_spec`` match among the owners sorted by
  config priority, else the ``op_state_spec`` of the highest-priority op that reads it
  (looked up by the tensor's attribute names; several matching keys: the last declared
  one wins, with a warning).
* Other float tensors with more than one element are activations: ``op_input_spec`` by
  schema position, ``op_output_spec`` by output position; a tensor that crosses a module
  boundary takes the innermost matching ``module_input_spec`` / ``module_output_spec``
  instead (an explicit None declines).
* A module called several times is placed once (its first call decides).
* Activation fake-quantizers are submodules of the module that ran the op, named
  ``<op>_quantize_<argument>`` and ``<op>_quantize_output_<i>``.
"""

from __future__ import annotations

import logging
import warnings
from collections.abc import Mapping
from dataclasses import dataclass, field

import torch
from torch import nn

from coreai_opt.config._keys import ALL_TENSORS
from coreai_opt.quantization._eager.recording import ModuleCall, OpArg, OpCall, Recording
from coreai_opt.quantization._eager.runtime import SiteRef
from coreai_opt.quantization.config import QuantizerConfig
from coreai_opt.quantization.config.resolution import (
    ConfigLevel,
    ResolvedModuleConfig,
    build_module_config_dict,
    lookup_spec_entry,
    match_op_config,
)
from coreai_opt.quantization.spec import QuantizationSpec

__all__ = ["ActivationSite", "BoundarySite", "EagerPlan", "StatePlacement", "plan_placement"]

logger = logging.getLogger(__name__)

_FLOAT_DTYPES = (torch.float32, torch.float16, torch.bfloat16, torch.float64)
_LEVEL_ORDER = {ConfigLevel.MODULE_NAME: 0, ConfigLevel.MODULE_TYPE: 1, ConfigLevel.GLOBAL: 2}


@dataclass
class ActivationSite:
    """One activation fake-quantizer at one tensor position of one op.

    *ref* is the part the runtime keeps (which op call and tensor position, the
    fake-quantizer's qualified name); the other fields are what prepare needs to create
    and attach the fake-quantizer.
    """

    ref: SiteRef
    module_path: str
    op_name: str
    fq_name: str
    spec: QuantizationSpec

    @property
    def fq_path(self) -> str:
        """Qualified name of the fake-quantizer submodule."""
        return self.ref.fq_path


@dataclass
class StatePlacement:
    """One state tensor (weight, bias, buffer) and the spec of its fake-quantizer."""

    tensor: torch.Tensor
    owners: list[tuple[str, str]]
    spec: QuantizationSpec
    consumers: list[type] = field(default_factory=list)


@dataclass
class BoundarySite:
    """A module_input_spec / module_output_spec fake-quantizer applied in the module's
    forward hooks, for a boundary tensor that no intercepted op of the module reads
    (or produces): ``input_quantize_<i>`` / ``output_quantize_<i>`` on that module."""

    module_path: str
    output: bool
    index: int
    spec: QuantizationSpec

    @property
    def fq_name(self) -> str:
        """Name of the fake-quantizer submodule on the module."""
        return f"{'output' if self.output else 'input'}_quantize_{self.index}"

    @property
    def fq_path(self) -> str:
        """Qualified name of the fake-quantizer submodule."""
        return f"{self.module_path}.{self.fq_name}" if self.module_path else self.fq_name


@dataclass
class EagerPlan:
    """The placement of every fake-quantizer of one model."""

    sites: list[ActivationSite]
    states: list[StatePlacement]
    op_names: dict[str, str]
    boundaries: list[BoundarySite] = field(default_factory=list)


def _quantizable(t: torch.Tensor | None) -> bool:
    return isinstance(t, torch.Tensor) and t.dtype in _FLOAT_DTYPES and t.numel() > 1


def _arg_label(arg: OpArg) -> str:
    # Tensor methods arrive with the schema's `self`; the reference's normalised
    # argument name for the first operand is `input`.
    name = "input" if arg.name == "self" else arg.name
    return name if arg.element < 0 else f"{name}_{arg.element}"


def _state_owners(model: nn.Module) -> dict[int, list[tuple[str, str]]]:
    owners: dict[int, list[tuple[str, str]]] = {}
    for path, module in model.named_modules(remove_duplicate=False):
        # remove_duplicate=False: a tensor held under several names of one module
        # (``self.kernel = self.weight``) has every name as an owner, so each alias is
        # parametrized (the forward may read any of them) and takes part in the spec
        # lookup (several matching keys: the last declared wins, with a warning).
        for name, param in module.named_parameters(recurse=False, remove_duplicate=False):
            owners.setdefault(id(param), []).append((path, name))
        for name, buf in module.named_buffers(recurse=False, remove_duplicate=False):
            if buf is not None:
                owners.setdefault(id(buf), []).append((path, name))
    for key, entries in owners.items():
        owners[key] = list(dict.fromkeys(entries))
    return owners


def _state_spec(
    specs: Mapping[int | str, QuantizationSpec | None], names: list[str], where: str
) -> tuple[bool, QuantizationSpec | None]:
    hits = [key for key in specs if key != ALL_TENSORS and key in names]
    if len(hits) > 1:
        warnings.warn(
            f"{where}: several spec keys name the same tensor ({hits}); the last declared "
            f"key {hits[-1]!r} wins",
            UserWarning,
            stacklevel=4,
        )
    if hits:
        return True, specs[hits[-1]]
    if ALL_TENSORS in specs:
        return True, specs[ALL_TENSORS]
    return False, None


def _boundary_override(
    tensor: torch.Tensor,
    call: ModuleCall,
    configs: Mapping[str, ResolvedModuleConfig],
    outputs: bool,
    used: set[tuple[int, int, bool]],
) -> tuple[bool, QuantizationSpec | None]:
    """Innermost module call (from *call* outwards) whose boundary holds *tensor* with a
    matching module_input_spec / module_output_spec key; records the boundary slot it
    used in *used* (so the module's hooks do not quantize that tensor again)."""
    field_name = "module_output_spec" if outputs else "module_input_spec"
    node: ModuleCall | None = call
    while node is not None:
        tensors = node.outputs if outputs else node.inputs
        positions = [i for i, t in enumerate(tensors) if t is tensor]
        resolved = configs.get(node.path)
        if positions and resolved is not None and resolved.config is not None:
            specs = getattr(resolved.config, field_name)
            # Warn only where a module-level spec is configured: without one the index
            # decides nothing (this logged for every repeated boundary tensor, e.g. each
            # MultiheadAttention(x, x, x) under plain W8A8).
            if len(positions) > 1 and specs:
                logger.warning(
                    "%s: the same tensor is %s %s of module %r; the first index wins",
                    field_name,
                    "output" if outputs else "input",
                    positions,
                    node.path,
                )
            found, spec = lookup_spec_entry(specs, positions[0])
            if found:
                used.add((id(node), positions[0], outputs))
                return True, spec
        node = node.parent
    return False, None


def _boundary_sites(
    recording: Recording,
    configs: Mapping[str, ResolvedModuleConfig],
    used: set[tuple[int, int, bool]],
) -> list[BoundarySite]:
    """Module boundary specs that no intercepted op took over (first call per module)."""
    sites: list[BoundarySite] = []
    seen: set[str] = set()
    for call in recording.module_calls:
        if call.path in seen:
            continue
        seen.add(call.path)
        resolved = configs.get(call.path)
        if resolved is None or resolved.config is None:
            continue
        for outputs, tensors in ((False, call.inputs), (True, call.outputs)):
            specs = getattr(
                resolved.config, "module_output_spec" if outputs else "module_input_spec"
            )
            if not specs:
                continue
            for index, tensor in enumerate(tensors):
                if not _quantizable(tensor) or (id(call), index, outputs) in used:
                    continue
                if any(t is tensor for t in tensors[:index]):
                    continue  # the same tensor twice: the first index wins
                found, spec = lookup_spec_entry(specs, index)
                if found and spec is not None:
                    sites.append(BoundarySite(call.path, outputs, index, spec))
    return sites


def plan_placement(model: nn.Module, config: QuantizerConfig, recording: Recording) -> EagerPlan:
    """Decide every fake-quantizer of *model* from its recording pass."""
    configs = build_module_config_dict(config, model)
    owners_of = _state_owners(model)
    sites: list[ActivationSite] = []
    state_uses: dict[int, list[tuple[int, int, QuantizationSpec | None, bool]]] = {}
    state_tensors: dict[int, torch.Tensor] = {}
    consumers: dict[int, list[type]] = {}
    op_names: dict[str, str] = {}
    seen: set[tuple[int, int, int]] = set()
    used: set[tuple[int, int, bool]] = set()
    for op in recording.ops:
        key = (op.module_index, op.base_id, op.call_index)
        if key in seen:
            continue  # a module called again: its first call decides
        seen.add(key)
        op_names.setdefault(op.op_name, op.op_type)
        resolved = configs.get(op.module_path)
        module_config = None if resolved is None else resolved.config
        if module_config is None:
            continue
        # An optional type that no config names (op_name_config / op_type_config) gets no
        # op-level specs, but module-level specs (module_input/output_spec at a boundary,
        # module_state_spec) still apply to it, as they apply to every op the reference
        # intercepts (previously such an op was skipped whole, so e.g. module_output_spec
        # on a block ending in softmax placed nothing). Other ops fall back to the scope's
        # op_*_spec defaults, as resolve_op_config does.
        op_config = match_op_config(module_config, op.op_name, op.op_type)
        if op_config is None and not op.overload.optional:
            op_config = module_config.op_defaults()
        level = _LEVEL_ORDER[resolved.level] if resolved is not None else 2
        for arg in op.inputs:
            tensor = arg.tensor
            if id(tensor) in owners_of:
                if not _quantizable(tensor):
                    continue
                state_tensors[id(tensor)] = tensor
                consumers.setdefault(id(tensor), []).append(_consumer_type(model, op))
                if op_config is not None:
                    names = [name for _, name in owners_of[id(tensor)]]
                    found, spec = _state_spec(op_config.op_state_spec, names, op.op_name)
                    state_uses.setdefault(id(tensor), []).append((level, op.order, spec, found))
                continue
            if (
                op.overload.activation_args is not None
                and arg.name not in op.overload.activation_args
            ):
                continue
            if not _quantizable(tensor):
                continue
            found, spec = _boundary_override(tensor, op.module_call, configs, False, used)
            if not found and op_config is not None:
                found, spec = lookup_spec_entry(op_config.op_input_spec, arg.index)
            if spec is None:
                continue
            name = f"{op.local_name}_quantize_{_arg_label(arg)}"
            sites.append(_site(op, False, arg.index, arg.element, name, spec))
        for index, out in enumerate(op.outputs):
            if not _quantizable(out):
                continue
            assert out is not None
            found, spec = _boundary_override(out, op.module_call, configs, True, used)
            if not found and op_config is not None:
                found, spec = lookup_spec_entry(op_config.op_output_spec, index)
            if spec is None:
                continue
            name = f"{op.local_name}_quantize_output_{index}"
            sites.append(_site(op, True, index, -1, name, spec))
    states = _resolve_states(model, configs, owners_of, state_tensors, state_uses, consumers)
    boundaries = _boundary_sites(recording, configs, used)
    return EagerPlan(sites, states, op_names, boundaries)


def _site(
    op: OpCall,
    output: bool,
    index: int,
    element: int,
    name: str,
    spec: QuantizationSpec,
) -> ActivationSite:
    path = f"{op.module_path}.{name}" if op.module_path else name
    ref = SiteRef(op.module_index, op.base_id, op.call_index, output, index, element, path)
    return ActivationSite(ref, op.module_path, op.op_name, name, spec)


def _consumer_type(model: nn.Module, op: OpCall) -> type:
    module = model.get_submodule(op.module_path) if op.module_path else model
    return type(module)


def _resolve_states(
    model: nn.Module,
    configs: Mapping[str, ResolvedModuleConfig],
    owners_of: Mapping[int, list[tuple[str, str]]],
    tensors: Mapping[int, torch.Tensor],
    uses: Mapping[int, list[tuple[int, int, QuantizationSpec | None, bool]]],
    consumers: Mapping[int, list[type]],
) -> list[StatePlacement]:
    states = []
    for key, tensor in tensors.items():
        owners = owners_of[key]
        # module_state_spec of the owners, most specific config level first.
        ranked = sorted(
            owners,
            key=lambda o: _LEVEL_ORDER.get(
                configs[o[0]].level if o[0] in configs else ConfigLevel.GLOBAL, 2
            ),
        )
        chosen: tuple[bool, QuantizationSpec | None] = (False, None)
        for path, name in ranked:
            resolved = configs.get(path)
            if resolved is None or resolved.config is None:
                continue
            found, spec = _state_spec(resolved.config.module_state_spec, [name], path or "<root>")
            if found:
                chosen = (True, spec)
                break
        if not chosen[0]:
            if not uses.get(key):
                continue  # read only by optional ops no config names: module_state_spec only
            # op_state_spec of the highest-priority reader (then the first one to read it).
            _, _, spec, found = min(uses[key], key=lambda u: (u[0], u[1]))
            chosen = (found, spec)
        if chosen[1] is None:
            continue
        types = list(
            dict.fromkeys(type(model.get_submodule(p)) if p else type(model) for p, _ in owners)
        )
        states.append(StatePlacement(tensor, list(owners), chosen[1], types))
    return states
