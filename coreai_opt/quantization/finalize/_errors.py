"""The error raised when one fake-quantizer cannot be converted at finalize."""

from __future__ import annotations

__all__ = ["FinalizeNodeError", "FinalizeNodeValueError", "node_error"]


class FinalizeNodeError(RuntimeError):
    """Converting the fake-quantizer *node* failed; ``__cause__`` holds the reason.

    The message starts with ``Failed to process fake quantization node <name>:`` (as the
    reference's graph finalize words it) and goes on with the reason's own text.
    """

    def __init__(self, node: str, cause: BaseException) -> None:
        """Wrap *cause*, raised while converting the fake-quantizer *node*."""
        self.node = node
        self.cause = cause
        super().__init__(f"Failed to process fake quantization node {node}: {cause}")


class FinalizeNodeValueError(FinalizeNodeError, ValueError):
    """A :class:`FinalizeNodeError` whose reason is a ``ValueError``.

    It is both: the reference wraps per-node errors in ``RuntimeError``, while the reason
    (an unsupported format or granularity) is a ``ValueError``, so either ``except``
    clause catches it.
    """


def node_error(node: str, cause: BaseException) -> FinalizeNodeError:
    """The wrapper for *cause* raised while converting *node* (raise it ``from cause``)."""
    if isinstance(cause, ValueError):
        return FinalizeNodeValueError(node, cause)
    return FinalizeNodeError(node, cause)
