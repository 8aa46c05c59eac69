"""Training a transformation network (TensorFlow-only: the distributed training step).

``PerceptualTrainer`` is a ``keras.Model`` whose ``train_step`` reads like the paper: run the
transformation network, score its output with the objective (style transfer: content, style and
TV against the input itself; super-resolution: l_feat or l_pixel against the high-res target),
and update the transformation network only. It is built under a ``tf.distribute.MirroredStrategy``
(all visible GPUs, else one CPU device); each replica's loss is its share of the sum over the
global batch divided by the global batch size, so gradients summed over replicas are the
gradients of the global-batch mean.

``train(config)`` runs the whole job: checks, data, checkpoints and resume, TensorBoard,
NaN guard, the final ``.keras`` file and the SavedModel export.
"""

from __future__ import annotations

import glob
import json
import math
import os
import re
import time

import keras
import numpy as np
import tensorflow as tf
from absl import logging

from kperceptual import config as config_lib
from kperceptual import data, degradation, export, images, losses, networks
from kperceptual.precision import dtype_policy, resolve_precision

SAMPLE_PHOTOS = ("astronaut", "chelsea", "coffee")


class TrainingDiverged(RuntimeError):
    """The loss became NaN or infinite."""


class PerceptualTrainer(keras.Model):
    """Trains ``network`` against an objective of ``kperceptual.losses`` (its loss network, if
    any, is frozen). Batches are images (style transfer: the input is its own content target)
    or (input, target) pairs (super-resolution: low-res, high-res)."""

    def __init__(self, network, objective, **kwargs):
        super().__init__(**kwargs)
        self.network = network
        self.objective = objective
        if objective.loss_network is not None:
            self.loss_network = objective.loss_network  # tracked, frozen
        self.trackers = {name: keras.metrics.Mean(name=f"{name}_loss" if name != "total"
                                                  else "loss") for name in objective.terms}

    @property
    def metrics(self):
        return list(self.trackers.values())

    def call(self, images, training=False):
        return self.network(images, training=training)

    def train_step(self, data):
        inputs, targets = data if isinstance(data, (tuple, list)) else (data, data)
        inputs = tf.cast(inputs, tf.float32)
        targets = self.objective.content_targets(tf.cast(targets, tf.float32))
        replicas = tf.distribute.get_replica_context().num_replicas_in_sync
        global_batch = tf.cast(tf.shape(inputs)[0] * replicas, tf.float32)
        variables = self.network.trainable_variables
        with tf.GradientTape() as tape:
            outputs = self.network(inputs, training=True)
            terms = self.objective(outputs, targets)
            loss = tf.reduce_sum(terms["total"]) / global_batch
        gradients = tape.gradient(loss, variables)
        self.optimizer.apply_gradients(zip(gradients, variables))
        for name, tracker in self.trackers.items():
            tracker.update_state(terms[name])
        return {tracker.name: tracker.result() for tracker in self.metrics}


def make_strategy() -> tf.distribute.Strategy:
    """MirroredStrategy over all visible GPUs, or over the (first) CPU when there are none."""
    gpus = tf.config.list_logical_devices("GPU")
    if gpus:
        return tf.distribute.MirroredStrategy([d.name for d in gpus])
    return tf.distribute.MirroredStrategy([tf.config.list_logical_devices("CPU")[0].name])


# -- checkpoints ------------------------------------------------------------------------------
_CKPT = re.compile(r"ckpt-(\d+)\.npz$")


def _variables(trainer):
    return list(trainer.network.weights), list(trainer.optimizer.variables)


def save_checkpoint(trainer, directory: str, step: int, keep: int = 2) -> str:
    """Writes network and optimizer state atomically as ``ckpt-<step>.npz``; keeps the last few."""
    os.makedirs(directory, exist_ok=True)
    net_vars, opt_vars = _variables(trainer)
    arrays = {f"net_{i}": keras.ops.convert_to_numpy(v.value) for i, v in enumerate(net_vars)}
    arrays.update({f"opt_{i}": keras.ops.convert_to_numpy(v.value)
                   for i, v in enumerate(opt_vars)})
    path = os.path.join(directory, f"ckpt-{step:08d}.npz")
    tmp = path + ".tmp.npz"
    np.savez(tmp, **arrays)
    os.replace(tmp, path)
    for old in sorted(list_checkpoints(directory))[:-keep]:
        os.remove(old[1])
    return path


def list_checkpoints(directory: str) -> list[tuple[int, str]]:
    """Complete checkpoints in ``directory`` as sorted (step, path) pairs."""
    found = []
    for path in glob.glob(os.path.join(directory, "ckpt-*.npz")):
        match = _CKPT.search(os.path.basename(path))
        if match:
            found.append((int(match.group(1)), path))
    return sorted(found)


def restore_checkpoint(trainer, path: str) -> int:
    """Loads a checkpoint into the trainer (optimizer built first); returns its step."""
    trainer.optimizer.build(trainer.network.trainable_variables)
    net_vars, opt_vars = _variables(trainer)
    with np.load(path) as f:
        if len([k for k in f.files if k.startswith("net_")]) != len(net_vars) or \
                len([k for k in f.files if k.startswith("opt_")]) != len(opt_vars):
            raise ValueError(f"{path}: does not match this network or optimizer")
        for i, v in enumerate(net_vars):
            v.assign(f[f"net_{i}"])
        for i, v in enumerate(opt_vars):
            v.assign(f[f"opt_{i}"])
    return int(trainer.optimizer.iterations.numpy())


# -- callbacks --------------------------------------------------------------------------------
class TrainingMonitor(keras.callbacks.Callback):
    """Stops on NaN, checkpoints every N steps, logs windowed scalars and sample images."""

    def __init__(self, checkpoint_dir, checkpoint_every, log_dir, log_every, sample_every,
                 sample_images, total_steps):
        super().__init__()
        self.checkpoint_dir = checkpoint_dir
        self.checkpoint_every = checkpoint_every
        self.log_every = log_every
        self.sample_every = sample_every
        self.sample_images = sample_images
        self.total_steps = total_steps
        self.writer = tf.summary.create_file_writer(log_dir)
        self.diverged_at = None
        self._window_start = time.perf_counter()
        self._reset_window = False

    def on_train_batch_begin(self, batch, logs=None):
        if self._reset_window:
            for tracker in self.model.metrics:
                tracker.reset_state()
            self._reset_window = False

    def _step(self) -> int:
        return int(self.model.optimizer.iterations.numpy())

    def on_train_batch_end(self, batch, logs=None):
        step = self._step()
        logs = logs or {}
        if not all(math.isfinite(float(v)) for v in logs.values()):
            self.diverged_at = step
            self.model.stop_training = True
            return
        if step % self.log_every == 0:
            elapsed = time.perf_counter() - self._window_start
            with self.writer.as_default(step=step):
                for name, value in logs.items():
                    tf.summary.scalar(name, float(value))
                tf.summary.scalar("seconds_per_step", elapsed / self.log_every)
            self._reset_window = True  # the next step starts a new averaging window
            self._window_start = time.perf_counter()
        if step % self.sample_every == 0:
            self.write_samples(step)
        if step % self.checkpoint_every == 0 or step >= self.total_steps:
            save_checkpoint(self.model, self.checkpoint_dir, step)
        if step >= self.total_steps:
            self.model.stop_training = True

    def write_samples(self, step):
        outputs = [self.model.network(x[None], training=False)[0] for x in self.sample_images]
        with self.writer.as_default(step=step):
            for i, (x, y) in enumerate(zip(self.sample_images, outputs)):
                x = tf.image.resize(tf.cast(x, tf.float32), tf.shape(y)[:2], method="nearest")
                pair = tf.concat([x, tf.cast(y, tf.float32)], axis=1)
                tf.summary.image(f"sample_{i}", tf.cast(pair[None], tf.uint8), step=step)
        self.writer.flush()


# -- the job ----------------------------------------------------------------------------------
def load_style_image(config) -> np.ndarray:
    return images.resize_long_side(images.read_image(config.style_image), config.style_size)


def make_network(config, **kwargs):
    """The transformation network a training config describes (untrained)."""
    if config.task == "super_resolution":
        return networks.SuperResolutionNetwork(**config.network_config(), **kwargs)
    return networks.StyleTransferNetwork(**config.network_config(), **kwargs)


def make_source(config) -> data.TrainingImages:
    """The training data a config describes; raises ``data.DataError``."""
    if config.task == "super_resolution":
        return data.SuperResolutionPairs(config.train_data, config.image_size, config.scale,
                                         config.blur_sigma, config.tfds_data_dir)
    return data.TrainingImages(config.train_data, config.image_size, config.tfds_data_dir)


def sample_inputs(config) -> list[np.ndarray]:
    """The network inputs whose outputs TensorBoard shows while training: three bundled photos
    (for super-resolution, degraded high-res crops)."""
    crops = [images.resize_and_center_crop(images.skimage_photo(n), config.image_size)
             for n in SAMPLE_PHOTOS]
    if config.task == "super_resolution":
        return [degradation.degrade(c, config.scale, config.blur_sigma) for c in crops]
    return crops


def build_trainer(config, strategy=None, loss_net=None, optimizer=None,
                  jit_compile="auto") -> PerceptualTrainer:
    """Builds and compiles the trainer under ``strategy`` (a new MirroredStrategy if None),
    with Adam at ``config.learning_rate`` unless ``optimizer`` (a callable making one) is given."""
    strategy = strategy or make_strategy()
    with strategy.scope():
        style = (load_style_image(config).astype(np.float32)
                 if config.task == "style" else None)
        objective = losses.objective_from_config(config, style, loss_net)
        network = make_network(config)
        trainer = PerceptualTrainer(network, objective)
        trainer.compile(optimizer=optimizer() if optimizer else
                        keras.optimizers.Adam(config.learning_rate),
                        jit_compile=jit_compile)
    return trainer


def _check_model_dir(config) -> None:
    """A model_dir remembers its network; resuming with another architecture is an error."""
    path = os.path.join(config.model_dir, "config.json")
    if os.path.isfile(path):
        with open(path) as f:
            saved = json.load(f)
        # Early super-resolution runs did not record the task; their config has a scale.
        task = saved.get("task") or ("super_resolution" if "scale" in saved else "style")
        if task != config.task:
            raise config_lib.ConfigError(
                "model_dir", f"{config.model_dir} holds a {task} network; "
                             f"use another --model_dir for --task={config.task}")
        for key, value in config.network_config().items():
            if saved.get(key) != value:
                raise config_lib.ConfigError(
                    key, f"{config.model_dir} holds a network trained with {key}={saved.get(key)}"
                         f"; use another --model_dir or the same --{key}")
    else:
        os.makedirs(config.model_dir, exist_ok=True)
        with open(path, "w") as f:
            json.dump(config.to_dict(), f, indent=2)


def train(config, strategy=None, verbose=1) -> dict:
    """Runs a training job end to end; returns paths and numbers of what it did.

    Resumes from the newest checkpoint in ``config.model_dir``. Raises ``ConfigError`` for bad
    settings, ``TrainingDiverged`` if the loss stops being finite.
    """
    config_lib.validate(config)
    strategy = strategy or make_strategy()
    if config.batch_size % strategy.num_replicas_in_sync:
        raise config_lib.ConfigError(
            "batch_size", f"{config.batch_size} does not split evenly over "
                          f"{strategy.num_replicas_in_sync} replicas")
    try:
        source = make_source(config)
    except data.DataError as e:
        raise config_lib.ConfigError("train_data", str(e)) from e
    _check_model_dir(config)
    precision = resolve_precision(config.precision)
    with dtype_policy(precision):
        return _train(config, strategy, source, precision, verbose)


def _train(config, strategy, source, precision, verbose) -> dict:
    trainer = build_trainer(config, strategy)
    checkpoint_dir = os.path.join(config.model_dir, "checkpoints")
    start = 0
    for partial in glob.glob(os.path.join(checkpoint_dir, "*.tmp.npz")):
        os.remove(partial)  # left by a run killed while writing a checkpoint
    checkpoints = list_checkpoints(checkpoint_dir)
    if checkpoints:
        with strategy.scope():
            start = restore_checkpoint(trainer, checkpoints[-1][1])
            trainer.optimizer.learning_rate.assign(config.learning_rate)  # the flag wins
        logging.info("resuming from %s at step %d", checkpoints[-1][1], start)
    samples = sample_inputs(config)
    monitor = TrainingMonitor(checkpoint_dir, config.checkpoint_every,
                              os.path.join(config.model_dir, "logs"), config.log_every,
                              config.sample_every, samples, config.steps)
    started = time.perf_counter()
    if start < config.steps:
        logging.info("training %s on %s, steps %d..%d, %s", config.name, source.describe(),
                     start, config.steps, precision)
        dataset = source.dataset(config.batch_size, config.seed, start)
        trainer.fit(dataset, epochs=1, steps_per_epoch=config.steps - start, shuffle=False,
                    callbacks=[monitor], verbose=verbose)
    elapsed = time.perf_counter() - started
    step = int(trainer.optimizer.iterations.numpy())
    if source.skipped:
        logging.warning("skipped %d unreadable training images", len(source.skipped))
    if monitor.diverged_at is not None:
        last = list_checkpoints(checkpoint_dir)
        kept = f"the last good checkpoint is {last[-1][1]}" if last else "no checkpoint was saved"
        raise TrainingDiverged(f"loss became NaN or infinite at step {monitor.diverged_at}; "
                               f"{kept}; try a lower --learning_rate or loss weights")
    # A fresh, strategy-free copy of the network for saving and export.
    with dtype_policy("float32"):
        network = make_network(config, name=config.name)
    network.set_weights(trainer.network.get_weights())
    keras_path = os.path.join(config.model_dir, f"{config.name}.keras")
    network.save(keras_path)
    export_path = export.export_saved_model(network, config.export_dir, config.name)
    return {
        "steps": step,
        "trained_steps": step - start,
        "seconds": elapsed,
        "precision": precision,
        "keras_path": keras_path,
        "export_path": export_path,
        "skipped_images": dict(source.skipped),
    }
