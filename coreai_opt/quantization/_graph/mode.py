"""``ExecutionMode.GRAPH``: prepare = torch.export + annotate + insert FQ modules.

The passes are separate modules (``export``, ``annotate``, ``insert``, ``train_eval``);
this class strings them together and plugs into the facade's life cycle
(``_lifecycle``), which is shared with eager mode.
"""

from __future__ import annotations

import logging
from collections.abc import Mapping, Sequence
from typing import Any

import torch
from torch import fx, nn

from coreai_opt._export_backend import ExportBackend
from coreai_opt.quantization import _lifecycle
from coreai_opt.quantization._graph.annotate import annotate
from coreai_opt.quantization._graph.conv_bn import fold_conv_bn, insert_qat_conv_bn, record_conv_bn
from coreai_opt.quantization._graph.export import export_model
from coreai_opt.quantization._graph.insert import (
    fq_modules,
    insert_fake_quantizers,
    remove_fake_quantizer_node,
)
from coreai_opt.quantization._graph.memory_format import mark_channels_last_fake_quantizers
from coreai_opt.quantization._graph.patterns import annotation_patterns
from coreai_opt.quantization._graph.train_eval import make_train_eval_switchable
from coreai_opt.quantization._mode import (
    ModeImplementation,
    check_example_inputs,
    check_tensor_keys,
    module_configs,
    op_configs,
    register_mode,
)
from coreai_opt.quantization.config import ExecutionMode
from coreai_opt.quantization.config.resolution import build_module_config_dict
from coreai_opt.quantization.spec.fake_quantize import FakeQuantize

__all__ = ["GraphMode"]

logger = logging.getLogger(__name__)

_OWNERS_KEY = "coreai_opt_fq_owners"


@register_mode(ExecutionMode.GRAPH)
class GraphMode(ModeImplementation):
    """Graph-mode prepare / finalize over ``torch.export``."""

    def validate(self) -> None:
        """Spec keys graph mode can address: op inputs/outputs by int or "*", outputs 0."""
        config = self.quantizer.config
        check_tensor_keys(
            config,
            "graph",
            fields=("op_input_spec", "op_output_spec", "module_input_spec", "module_output_spec"),
        )
        for module_config in module_configs(config):
            for op_config in op_configs(module_config):
                for key in op_config.op_output_spec:
                    if key not in ("*", 0):
                        raise NotImplementedError(
                            f"op_output_spec key {key!r}: graph-mode ops have one output; "
                            f"use 0 or '*'"
                        )

    def prepare(
        self,
        example_inputs: tuple[Any, ...],
        dynamic_shapes: Any = None,
        export_with_no_grad: bool = True,
    ) -> nn.Module:
        """Export, annotate, insert FQs, initialise their qparams on *example_inputs*."""
        model = self.quantizer.model
        if _lifecycle.is_prepared(model):
            raise RuntimeError(
                "the model is already prepared; call Quantizer.prepare() on the float model"
            )
        check_example_inputs(example_inputs)
        config = self.quantizer.config
        gm = export_model(model, example_inputs, dynamic_shapes, export_with_no_grad)
        annotations = annotate(gm, model, config, build_module_config_dict(config, model))
        conv_bn = insert_qat_conv_bn(gm, annotations)
        placement = insert_fake_quantizers(gm, annotations)
        record_conv_bn(gm, conv_bn, make_train_eval_switchable(gm))
        fqs = fq_modules(gm)
        _lifecycle.apply_weight_axis_defaults(
            {name: (fqs[name], consumers) for name, consumers in placement.weights.items()},
            {name: fqs[name] for name in placement.activations},
        )
        gm.meta[_OWNERS_KEY] = {name: list(o) for name, o in placement.owners.items()}
        _lifecycle.set_switches(gm, observer=True, fake_quant=False)
        was_training = model.training
        gm.eval()
        with torch.no_grad():
            gm(*example_inputs)
        _lifecycle.remove_disabled_fake_quantizers(gm, self.remove_fake_quantizer)
        mark_channels_last_fake_quantizers(gm, placement.activations)
        _lifecycle.set_switches(gm, observer=False, fake_quant=True)
        gm.train(was_training)
        self._preserve_attributes(model, gm)
        # Last, after every attribute prepare sets on the FQs: re-key the trace plans the
        # calibration forward built (what a FakeQuantize reads under torch.compile).
        for fq in fq_modules(gm).values():
            if isinstance(fq, FakeQuantize):
                fq.refresh_trace_plan()
        return _lifecycle.mark_prepared(gm)

    def _preserve_attributes(self, model: nn.Module, gm: fx.GraphModule) -> None:
        names = self.quantizer.config.preserved_attributes or []
        for name in names:
            if not hasattr(model, name):
                logger.warning("preserved attribute %r is not an attribute of the model", name)
                continue
            value = getattr(model, name)
            setattr(gm, name, value)
            _lifecycle.preserve_across_deepcopy(gm, name, value)

    def finalize(self, model: nn.Module, backend: ExportBackend, mmap_dir: str | None) -> nn.Module:
        """Finalize the prepared GraphModule *model* for *backend* (in place).

        Conv-bn pairs are folded into plain convs first (all backends). ``_TORCH`` keeps
        the FQ modules; ``CoreAI`` and ``CoreML`` convert them
        (``coreai_opt.quantization.finalize``): checks before any change, then the
        conversion, with ``.train()`` / ``.eval()`` working on the result.
        """
        self.check_model(model, "finalize()")
        _lifecycle.require_prepared(model, "finalize()")
        assert isinstance(model, fx.GraphModule)
        if backend is ExportBackend._TORCH:
            fold_conv_bn(model)
            return model
        # Imported here: the finalize package's graph half imports this package's op kinds.
        from coreai_opt.quantization.finalize._graph_finalize import finalize_graph

        return finalize_graph(
            model,
            backend,
            kv_cache_quant_configs=self.quantizer.config.kv_cache_quant_configs,
            fold=fold_conv_bn,
            mmap_dir=mmap_dir,
        )

    @classmethod
    def get_compressible_op_names(
        cls, model: nn.Module, example_inputs: tuple[Any, ...] | None = None
    ) -> set[str]:
        """Names of the FX nodes of an exported *model* that an annotation pattern matches
        (*example_inputs* is not needed: the graph is already there)."""
        if not isinstance(model, fx.GraphModule):
            raise TypeError(
                f"graph-mode get_compressible_op_names needs a torch.fx.GraphModule (e.g. "
                f"torch.export.export(model, inputs).module()), got {type(model).__name__}"
            )
        names: set[str] = set()
        for node in model.graph.nodes:
            for pattern in annotation_patterns():
                chain = pattern.match(node)
                if chain is not None:
                    names.update(n.name for n in chain)
                    break
        return names

    def check_model(self, model: nn.Module, caller: str) -> None:
        """Graph-mode models are the GraphModules prepare returned."""
        if not isinstance(model, fx.GraphModule):
            raise TypeError(
                f"{caller} in graph mode needs the torch.fx.GraphModule returned by "
                f"Quantizer.prepare(), got {type(model).__name__}"
            )

    def fake_quantizer_owners(
        self, model: nn.Module
    ) -> Mapping[str, Sequence[str | tuple[str, type | str | None]]] | None:
        """FQ name → the module whose config annotated it (recorded at prepare)."""
        meta = getattr(model, "meta", {}) or {}
        return meta.get(_OWNERS_KEY)

    def remove_fake_quantizer(self, model: nn.Module, name: str) -> None:
        """Drop the FQ module *name* and its calls from the graph."""
        assert isinstance(model, fx.GraphModule)
        remove_fake_quantizer_node(model, name)
