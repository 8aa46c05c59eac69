"""Learning-rate schedules for training, backend-neutral (``keras.ops``).

``WarmupDecay``: a linear warm-up from 0 to the peak rate over ``warmup_steps``, then

* ``constant``: the peak rate;
* ``cosine``: half a cosine from the peak down to ``final_fraction`` of it at ``total_steps``;
* ``step``: the peak rate, divided by 10 at 2/3 of the steps after warm-up and again at 8/9.
"""

from __future__ import annotations

import math

import keras
from keras import ops

from kperceptual.choices import LR_SCHEDULES

STEP_DROPS = (2 / 3, 8 / 9)  # fractions of the post-warm-up steps where "step" divides by 10


@keras.saving.register_keras_serializable(package="kperceptual")
class WarmupDecay(keras.optimizers.schedules.LearningRateSchedule):
    def __init__(self, peak, total_steps, warmup_steps=0, decay="cosine", final_fraction=0.01):
        if decay not in LR_SCHEDULES:
            raise ValueError(f"unknown schedule {decay!r}; expected one of {LR_SCHEDULES}")
        self.peak = float(peak)
        self.total_steps = int(total_steps)
        self.warmup_steps = int(warmup_steps)
        self.decay = decay
        self.final_fraction = float(final_fraction)

    def __call__(self, step):
        step = ops.cast(step, "float32")
        warm = float(max(self.warmup_steps, 1))
        warmup = ops.minimum((step + 1.0) / warm, 1.0) if self.warmup_steps else 1.0
        span = float(max(self.total_steps - self.warmup_steps, 1))
        t = ops.clip((step - self.warmup_steps) / span, 0.0, 1.0)
        if self.decay == "cosine":
            f = self.final_fraction
            factor = f + (1.0 - f) * 0.5 * (1.0 + ops.cos(math.pi * t))
        elif self.decay == "step":
            factor = ops.where(t >= STEP_DROPS[1], 0.01, ops.where(t >= STEP_DROPS[0], 0.1, 1.0))
        else:
            factor = 1.0
        return self.peak * warmup * factor

    def get_config(self):
        return {"peak": self.peak, "total_steps": self.total_steps,
                "warmup_steps": self.warmup_steps, "decay": self.decay,
                "final_fraction": self.final_fraction}


def learning_rate(config):
    """What ``keras.optimizers.Adam(learning_rate=...)`` gets for a training config: the plain
    rate for a constant schedule without warm-up (as before), else a ``WarmupDecay``."""
    if config.lr_schedule == "constant" and not config.warmup_steps:
        return config.learning_rate
    return WarmupDecay(config.learning_rate, config.steps, config.warmup_steps,
                       config.lr_schedule)
