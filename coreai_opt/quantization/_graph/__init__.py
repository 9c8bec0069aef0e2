"""Graph mode (``ExecutionMode.GRAPH``): ``torch.export`` plus our own small passes.

Importing this package registers the mode with the facade (``_mode.register_mode``).
"""

from coreai_opt.quantization._graph.mode import GraphMode
from coreai_opt.quantization._graph.patterns import register_annotation_pattern

__all__ = ["GraphMode", "register_annotation_pattern"]
