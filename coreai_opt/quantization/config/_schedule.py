"""``QATSchedule``: step thresholds for observers and fake-quant during QAT."""

from __future__ import annotations

from typing import NamedTuple

from pydantic import BaseModel, ConfigDict, Field, StrictInt, model_validator

__all__ = ["QATSchedule", "QATScheduleState"]


class QATScheduleState(NamedTuple):
    """Observer and fake-quant switches at one step."""

    obs_on: bool
    fq_on: bool


class QATSchedule(BaseModel):
    """When observers and fake quantization are switched on/off during QAT.

    Steps count calls of ``Quantizer.step()`` (per batch or per epoch, as the training
    loop chooses). At step ``k``: observers are on while
    ``enable_observer <= k < disable_observer`` (no upper bound when
    ``disable_observer`` is None) and fake quantization is on once
    ``k >= enable_fake_quant``.

    Rules: all values are ints >= 0 (``disable_observer`` > 0 or None);
    ``enable_fake_quant >= enable_observer``; ``disable_observer > enable_observer``
    and ``disable_observer >= enable_fake_quant``.
    """

    model_config = ConfigDict(frozen=True, extra="forbid")

    enable_observer: StrictInt = Field(default=0, ge=0)
    enable_fake_quant: StrictInt = Field(default=0, ge=0)
    disable_observer: StrictInt | None = Field(default=None, gt=0)

    @model_validator(mode="after")
    def _check_order(self) -> QATSchedule:
        if self.enable_fake_quant < self.enable_observer:
            raise ValueError(
                f"enable_fake_quant={self.enable_fake_quant} must be >= "
                f"enable_observer={self.enable_observer}"
            )
        if self.disable_observer is not None:
            if self.disable_observer <= self.enable_observer:
                raise ValueError(
                    f"disable_observer={self.disable_observer} must be > "
                    f"enable_observer={self.enable_observer} (or None)"
                )
            if self.disable_observer < self.enable_fake_quant:
                raise ValueError(
                    f"disable_observer={self.disable_observer} must be >= "
                    f"enable_fake_quant={self.enable_fake_quant} (or None)"
                )
        return self

    def state_at(self, step: int) -> QATScheduleState:
        """Observer / fake-quant state at step *step* (>= 0)."""
        if isinstance(step, bool) or not isinstance(step, int) or step < 0:
            raise ValueError(f"step must be an int >= 0, got {step!r}")
        end = self.disable_observer
        obs_on = self.enable_observer <= step and (end is None or step < end)
        return QATScheduleState(obs_on=obs_on, fq_on=step >= self.enable_fake_quant)

    def _compute_state(self, step_count: int) -> QATScheduleState:
        return self.state_at(step_count)
