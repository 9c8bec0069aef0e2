"""Prepare's last step: each fake-quantizer's trace plan, for torch.compile.

Under ``torch.compile`` a ``FakeQuantize`` with a valid trace plan reads its constant
arguments (format, method, averaging constant, pinned range, block pattern, layout request)
from one tuple instead of from about thirty attributes, so Dynamo checks one guard on that
tuple where it would check one per attribute before every call of the compiled model
(``FakeQuantize._usable_trace_plan``). A plan is keyed on the input dtype and on the
attribute versions of the fake-quantizer and its calculator, so prepare builds it after
every attribute prepare sets (``mark_channels_last_fake_quantizers`` included); an eager
forward rebuilds it after any later change.
"""

from __future__ import annotations

import torch
from torch import fx

from coreai_opt.quantization._graph.insert import is_fq_node
from coreai_opt.quantization.spec.fake_quantize import FakeQuantize


def refresh_trace_plans(gm: fx.GraphModule) -> int:
    """Build the trace plan of each ``FakeQuantize`` of *gm* for the dtype its first call
    receives: from the traced node's metadata, else (a node a pass inserted, such as the
    conv-bn QAT form's folded weight) the dtype of the plan the calibration forward built.
    Returns how many fake-quantizers have a plan."""
    done: set[str] = set()
    for node in gm.graph.nodes:
        if not is_fq_node(node) or str(node.target) in done:
            continue
        done.add(str(node.target))
        fq = gm.get_submodule(str(node.target))
        if not isinstance(fq, FakeQuantize):
            continue
        x = node.args[0] if node.args else None
        val = x.meta.get("val") if isinstance(x, fx.Node) else None
        fq.refresh_trace_plan(val.dtype if isinstance(val, torch.Tensor) else None)
    return sum(
        1
        for name in done
        if isinstance(fq := gm.get_submodule(name), FakeQuantize) and fq._trace_plan is not None
    )
