"""What a training run reports while it runs: loss terms and sample images every few steps
(TensorBoard event files where TensorFlow is installed, else ``scalars.jsonl`` and PNGs), the
NaN guard, checkpoints on schedule and on Ctrl-C. Backend-neutral; the TensorBoard writer is
``tf.summary``, reached only through ``tf_fence``.
"""

from __future__ import annotations

import json
import math
import os
import time

import keras
import numpy as np

from kperceptual.imaging import images
from kperceptual import networks
from kperceptual.training.checkpoints import save_checkpoint
from kperceptual.tf_fence import tensorflow_available


class SummaryWriter:
    """TensorBoard event files where TensorFlow is installed (``tf_summary``); without it,
    ``scalars.jsonl`` (one JSON object per logged step) and sample PNGs in ``log_dir``."""

    def __init__(self, log_dir: str):
        self.log_dir = log_dir
        os.makedirs(log_dir, exist_ok=True)
        self._tensorboard = None
        if tensorflow_available():
            from kperceptual.training import tf_summary

            self._tensorboard = tf_summary.TensorBoardWriter(log_dir)

    def scalars(self, step: int, values: dict) -> None:
        if self._tensorboard is not None:
            return self._tensorboard.scalars(step, values)
        with open(os.path.join(self.log_dir, "scalars.jsonl"), "a") as f:
            f.write(json.dumps({"step": step, **values}) + "\n")

    def images(self, step: int, named: dict) -> None:
        """Writes uint8 images (H, W, 3) by name."""
        if self._tensorboard is not None:
            return self._tensorboard.images(step, named)
        for name, image in named.items():
            images.write_image(os.path.join(self.log_dir, f"{name}_{step:08d}.png"), image)


class TrainingMonitor(keras.callbacks.Callback):
    """Stops on NaN and at the last step; on the chief, checkpoints every N steps and logs
    windowed scalars and sample images (other workers of a cluster write nothing)."""

    def __init__(self, checkpoint_dir, checkpoint_every, log_dir, log_every, sample_every,
                 sample_images, total_steps, chief=True, start=0):
        super().__init__()
        self.step = start  # training batches so far, this run's and before
        self.checkpoint_dir = checkpoint_dir
        self.checkpoint_every = checkpoint_every
        self.log_every = log_every
        self.sample_every = sample_every
        self.sample_images = sample_images
        self.total_steps = total_steps
        self.chief = chief
        self.writer = SummaryWriter(log_dir) if chief else None
        self.diverged_at = None
        self._window_start = time.perf_counter()
        self._reset_window = False

    def on_train_batch_begin(self, batch, logs=None):
        if self._reset_window:
            for tracker in self.model.metrics:
                tracker.reset_state()
            self._reset_window = False

    def on_train_batch_end(self, batch, logs=None):
        self.step = step = self.step + 1
        logs = {name: float(np.mean(value)) for name, value in (logs or {}).items()}
        if not all(math.isfinite(v) for v in logs.values()):
            self.diverged_at = step
            self.model.stop_training = True
            return
        checkpoint = self.chief and (step % self.checkpoint_every == 0
                                     or step >= self.total_steps)
        if checkpoint and save_checkpoint(self.model, self.checkpoint_dir, step) is None:
            self.diverged_at = step  # finite loss, but this step's update was not
            self.model.stop_training = True
            return
        if step % self.log_every == 0:
            elapsed = time.perf_counter() - self._window_start
            if self.chief:
                self.writer.scalars(step, {**logs, "seconds_per_step": elapsed / self.log_every})
            self._reset_window = True  # the next step starts a new averaging window
            self._window_start = time.perf_counter()
        if self.chief and step % self.sample_every == 0:
            self.write_samples(step)
        if step >= self.total_steps:
            self.model.stop_training = True

    def write_samples(self, step):
        """Each sample input beside its output (a multi-style network's: in every style)."""
        pairs = {}
        network = self.model.network
        n = networks.num_styles(network)
        for i, x in enumerate(self.sample_images):
            batch = keras.ops.convert_to_tensor(np.repeat(x[None], n, axis=0), "float32")
            inputs = batch if n == 1 else [batch, keras.ops.eye(n, dtype="float32")]
            ys = keras.ops.convert_to_numpy(network(inputs, training=False))
            factor = ys.shape[1] // x.shape[0]  # super-resolution: shown at the output's size
            x = np.repeat(np.repeat(x, factor, axis=0), factor, axis=1)
            pairs[f"sample_{i}"] = np.concatenate(
                [x] + [np.clip(np.round(y), 0, 255).astype(np.uint8) for y in ys], axis=1)
        self.writer.images(step, pairs)
