"""``ExecutionMode.EAGER``: ops intercepted inside the dispatcher (see ``mode``)."""

from coreai_opt.quantization._eager.mode import EagerMode

__all__ = ["EagerMode"]
