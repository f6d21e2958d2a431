"""The ``train:`` section of an experiment spec (values default to the paper code's, digest §7.1)."""

from __future__ import annotations

from typing import Literal

from pydantic import BaseModel, ConfigDict, Field


class TrainConfig(BaseModel):
    model_config = ConfigDict(extra="forbid")

    backprop: Literal["reverse", "store"] | None = None  # reversible cells only; default reverse
    lr: float = Field(20.0, gt=0)
    weight_decay: float = Field(1.2e-6, ge=0)
    momentum: float = Field(0.0, ge=0, lt=1)
    clip: float = Field(0.1, ge=0)  # global gradient-norm clipping; 0 disables it
    batch_size: int = Field(20, ge=1)
    eval_batch_size: int = Field(10, ge=1)
    test_batch_size: int = Field(1, ge=1)
    bptt: int = Field(70, ge=1)
    random_bptt: bool = True  # AWD-LSTM: N(70 or 35, 5), lr scaled by length / bptt
    epochs: int = Field(1, ge=1)
    max_steps: int | None = Field(None, ge=1)  # stop (and checkpoint) after this many optimizer steps
    steps_per_epoch: int | None = Field(None, ge=1)  # cap an epoch (quick runs); None = the whole split
    schedule: Literal["plateau", "halve_on_rise", "none"] = "plateau"
    lr_decay: float = Field(4.0, gt=1)
    nonmono: int = Field(5, ge=0)
    min_lr: float = Field(0.0, ge=0)  # stop training once the learning rate falls below this
    log_interval: int = Field(50, ge=1)
    eval_batches: int | None = Field(None, ge=1)  # cap validation batches (quick runs)
    checkpoint_every: int | None = Field(None, ge=1)  # also save `last` every N steps
