"""KV-cache quantization in graph mode: ``QuantizerConfig.kv_cache_quant_configs``.

Placeholder until the KV-cache configs land: no config field exists yet, so nothing is
annotated here.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from torch import fx

if TYPE_CHECKING:
    from coreai_opt.quantization._graph.annotate import Annotations
    from coreai_opt.quantization.config import QuantizerConfig

__all__ = ["apply_kv_cache_specs"]


def apply_kv_cache_specs(ann: Annotations, gm: fx.GraphModule, config: QuantizerConfig) -> None:
    """Override the input slots that the config's KV-cache entries name (none yet)."""
    return None
