"""Graph mode's annotation patterns: register a pattern for an op chain the built-in
registry lacks (the built-ins follow the reference's list and priority order).

Example: quantize the input of every softmax (with an ``op_type_config`` entry for
``"softmax"`` giving its ``op_input_spec``)::

    from coreai_opt.quantization.graph_patterns import register_annotation_pattern
    register_annotation_pattern("softmax", [[torch.ops.aten.softmax]], "nary")
"""

from coreai_opt.quantization._graph.patterns import (
    AnnotationPattern,
    annotation_patterns,
    register_annotation_pattern,
)

__all__ = ["AnnotationPattern", "annotation_patterns", "register_annotation_pattern"]
