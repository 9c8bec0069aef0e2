"""``KVCacheQuantConfig``: quantize the tensor that an attention cache op writes or reads.

A KV-cache entry of ``QuantizerConfig.kv_cache_quant_configs`` names an op type (the
torch-level op name, e.g. ``"index_copy_"``) and, through an :class:`OpQuantizerConfig`,
one input position of that op and the spec to put there. Graph mode annotates that input
of every op of the type with the spec, overriding every other config.

Rules checked here:

* ``op_input_spec`` holds exactly one entry, keyed by a non-negative ``int`` position,
  with a spec (not None);
* ``op_output_spec`` and ``op_state_spec`` are inactive (pass ``None``, i.e.
  ``{"*": None}``); leaving them out gives the active defaults and is refused.

Graph-mode only: ``QuantizerConfig`` refuses KV-cache entries with
``execution_mode="eager"``.
"""

from __future__ import annotations

from pydantic import BaseModel, ConfigDict, field_validator

from coreai_opt.config.compression_config import spec_dict_is_active
from coreai_opt.quantization.config.quantization_config import OpQuantizerConfig
from coreai_opt.quantization.spec import QuantizationSpec

__all__ = ["KVCacheQuantConfig"]


class KVCacheQuantConfig(BaseModel):
    """Which input of a KV-cache op to fake-quantize, and how.

    Field:
        op_quantizer_config: an :class:`OpQuantizerConfig` (or its dict form) whose
            ``op_input_spec`` is ``{index: spec}`` (one non-negative int position, one
            spec) and whose ``op_output_spec`` / ``op_state_spec`` are ``None``.

    Example::

        KVCacheQuantConfig(
            op_quantizer_config=OpQuantizerConfig(
                op_input_spec={2: QuantizationSpec(dtype=torch.int8)},
                op_output_spec=None,
                op_state_spec=None,
            )
        )

    Use it as a value of ``QuantizerConfig.kv_cache_quant_configs`` keyed by op type.
    """

    model_config = ConfigDict(extra="forbid", validate_assignment=True)

    op_quantizer_config: OpQuantizerConfig

    @field_validator("op_quantizer_config", mode="after")
    @classmethod
    def _check_single_input_spec(cls, op_config: OpQuantizerConfig) -> OpQuantizerConfig:
        # A field validator, so that a refused assignment leaves the config unchanged.
        inputs = op_config.op_input_spec
        keys = list(inputs)
        if len(keys) != 1:
            raise ValueError(
                f"op_quantizer_config.op_input_spec must have exactly one key, a non-negative "
                f"int input position mapped to a spec, got {len(keys)} keys: "
                f"{[str(k) for k in keys]}"
            )
        key = keys[0]
        if isinstance(key, bool) or not isinstance(key, int) or key < 0:
            raise ValueError(
                f"op_quantizer_config.op_input_spec key {key!r} is not allowed: the key must "
                f"be a non-negative int input position (0, 1, ...); '*' and names are refused"
            )
        if inputs[key] is None:
            raise ValueError(
                f"op_quantizer_config.op_input_spec[{key}] is None; a KV-cache config needs "
                f"a QuantizationSpec for that input"
            )
        for field in ("op_output_spec", "op_state_spec"):
            specs = getattr(op_config, field)
            if spec_dict_is_active(specs):
                active = [str(k) for k, v in specs.items() if v is not None]
                raise ValueError(
                    f"op_quantizer_config.{field} must be inactive (pass None) for a KV-cache "
                    f"config, got specs for keys {active}; only op_input_spec is used (an "
                    f"omitted field takes the active default)"
                )
        return op_config

    def input_entry(self) -> tuple[int, QuantizationSpec]:
        """``(index, spec)``: the input position (among the op's tensor inputs) and its spec.

        The rules are checked again first, so an ``op_quantizer_config`` edited in place
        after construction raises the same ``ValueError`` as at construction.
        """
        self._check_single_input_spec(self.op_quantizer_config)
        ((index, spec),) = self.op_quantizer_config.op_input_spec.items()
        assert isinstance(index, int) and spec is not None
        return index, spec
