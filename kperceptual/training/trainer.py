"""Training a transformation network, on any Keras backend.

``PerceptualTrainer`` is a ``keras.Model`` whose ``compute_loss`` reads like the paper: score the
transformation network's output with the objective (style transfer: content, style and TV
against the input itself; super-resolution: l_feat or l_pixel against the high-res target); only
the transformation network is trained. It is the one definition of the loss on every backend:

* TensorFlow: ``tf_training.train_step`` runs it under ``tf.distribute`` (MirroredStrategy on
  one machine, MultiWorkerMirroredStrategy across several);
* JAX and PyTorch: Keras's own ``train_step`` runs it (JAX: ``keras.distribution.DataParallel``
  over several devices).

``train(config)`` runs the whole job: checks, data (tf.data where TensorFlow is installed, else
``keras.utils.PyDataset``), checkpoints and resume, logs, NaN guard, the final ``.keras`` file and
the SavedModel export. In a multi-worker cluster every worker trains and resumes; only the chief
writes.
"""

from __future__ import annotations

import dataclasses
import glob
import json
import math
import os
import re
import subprocess
import sys
import time

import keras
import numpy as np
from absl import logging

from kperceptual import choices
from kperceptual import config as config_lib
from kperceptual.data import sources as data
from kperceptual.data import degradation
from kperceptual.training import distribute
from kperceptual.imaging import files
from kperceptual.imaging import images
from kperceptual.losses import perceptual as losses
from kperceptual import networks
from kperceptual.training import schedules
from kperceptual.networks.precision import dtype_policy, resolve_precision

SAMPLE_PHOTOS = ("astronaut", "chelsea", "coffee")
# Network settings that runs before them did not record, as those runs had them.
NETWORK_DEFAULTS = {"residual": "none", "head": "tanh"}


class TrainingDiverged(RuntimeError):
    """The loss became NaN or infinite."""


class TrainingInterrupted(RuntimeError):
    """Ctrl-C (SIGINT) stopped training; the state was checkpointed."""


class PerceptualTrainer(keras.Model):
    """Trains ``network`` against an objective of ``kperceptual.losses`` (its loss network, if
    any, is frozen). Batches are images (style transfer: the input is its own content target)
    or (input, target) pairs (super-resolution: low-res, high-res).

    ``stability_weight`` > 0 adds ``losses.stability_loss`` to the objective: each step also
    runs the network on a window of every other input, ``stability_shift`` pixels smaller in
    each side and placed at an offset drawn from 0..``stability_shift`` in each direction (so
    shifts that do not keep the network's stride-4 grid are trained too), with Gaussian noise
    of ``stability_noise`` levels, and asks for the same output there."""

    def __init__(self, network, objective, stability_weight=0.0, stability_shift=8,
                 stability_noise=0.0, seed=0, **kwargs):
        super().__init__(**kwargs)
        self.network = network
        self.objective = objective
        self.num_styles = networks.num_styles(network)
        if objective.loss_network is not None:
            self.loss_network = objective.loss_network  # tracked, frozen
        self.stability_weight = float(stability_weight)
        self.stability_shift = int(stability_shift)
        self.stability_noise = float(stability_noise)
        terms = objective.terms + (("stability",) if self.stability_weight else ())
        if self.stability_weight:
            self.stability_seed = keras.random.SeedGenerator(seed)
        self.trackers = {name: keras.metrics.Mean(name=f"{name}_loss" if name != "total"
                                                  else "loss") for name in terms}

    @property
    def metrics(self):
        return list(self.trackers.values())

    def metric_results(self) -> dict:
        return {tracker.name: tracker.result() for tracker in self.metrics}

    @staticmethod
    def split_batch(data):
        """(inputs, targets) of a batch; an image batch is its own target (None)."""
        if isinstance(data, (tuple, list)):
            return (data[0], data[1]) if len(data) > 1 else (data[0], None)
        return data, None

    def call(self, images, training=False):
        """The network's output; a multi-style network's batches are dicts of the pixels and
        each example's style index (``data.MultiStyleImages``), trained one-hot."""
        if isinstance(images, dict):
            style = keras.ops.one_hot(keras.ops.cast(images[data.STYLE_KEY], "int32"),
                                      self.num_styles)
            return self.network([keras.ops.cast(images[data.PIXELS_KEY], "float32"), style],
                                training=training)
        return self.network(keras.ops.cast(images, "float32"), training=training)

    def compute_loss(self, x=None, y=None, y_pred=None, sample_weight=None, training=True):
        """The objective's mean over this batch of outputs ``y_pred`` for inputs ``x`` against
        targets ``y`` (``x`` itself when None; a multi-style batch's pixels, each example
        against its style's Gram matrices); updates the per-term metrics."""
        styles = None
        if isinstance(x, dict):
            x, styles = x[data.PIXELS_KEY], keras.ops.cast(x[data.STYLE_KEY], "int32")
        targets = self.objective.content_targets(
            keras.ops.cast(x if y is None else y, "float32"))
        style_kwargs = {} if styles is None else {"styles": styles}
        terms = self.objective(keras.ops.cast(y_pred, "float32"), targets, **style_kwargs)
        if self.stability_weight:
            # Every other example (half the cost of a second pass over all of them); the term
            # is their mean, the same for each example of the batch.
            offset = keras.random.randint((2,), 0, self.stability_shift + 1,
                                          seed=self.stability_seed, dtype="int32")
            half = self.stability_weight * losses.stability_loss(
                self._shifted_output(x[::2], None if styles is None else styles[::2], offset),
                y_pred[::2], offset)
            stability = keras.ops.mean(half) * keras.ops.ones_like(terms["total"])
            terms = {**terms, "stability": stability, "total": terms["total"] + stability}
        for name, tracker in self.trackers.items():
            tracker.update_state(terms[name])
        return keras.ops.mean(terms["total"])

    def _shifted_output(self, pixels, styles, offset):
        """The network's output for the window of ``pixels`` at ``offset`` (dy, dx), each side
        ``stability_shift`` pixels shorter, with sensor noise: the stability term's view."""
        pixels = keras.ops.cast(pixels, "float32")
        shape = keras.ops.shape(pixels)
        view = keras.ops.slice(pixels, [0, offset[0], offset[1], 0],
                               [shape[0], shape[1] - self.stability_shift,
                                shape[2] - self.stability_shift, shape[3]])
        if self.stability_noise:
            view = keras.ops.clip(view + self.stability_noise * keras.random.normal(
                keras.ops.shape(view), seed=self.stability_seed), 0.0, 255.0)
        return self.call(view if styles is None else
                         {data.PIXELS_KEY: view, data.STYLE_KEY: styles}, training=True)

    if keras.backend.backend() == "tensorflow":
        def train_step(self, data):
            from kperceptual.training import tf_step as tf_training

            return tf_training.train_step(self, data)


# -- checkpoints ------------------------------------------------------------------------------
_CKPT = re.compile(r"ckpt-(\d+)\.npz$")


def _variables(trainer):
    return list(trainer.network.weights), list(trainer.optimizer.variables)


class CheckpointError(ValueError):
    """A checkpoint file is damaged (truncated, not an npz) or holds NaN or infinite values."""


def _finite(arrays) -> bool:
    return all(np.isfinite(a).all() for a in arrays.values()
               if np.issubdtype(a.dtype, np.inexact))


def save_checkpoint(trainer, directory: str, step: int, keep: int = 2) -> str | None:
    """Writes network and optimizer state atomically as ``ckpt-<step>.npz``; keeps the last few.
    State holding NaN or infinite values is not written (nothing is removed): returns None."""
    net_vars, opt_vars = _variables(trainer)
    arrays = {f"net_{i}": keras.ops.convert_to_numpy(v.value) for i, v in enumerate(net_vars)}
    arrays.update({f"opt_{i}": keras.ops.convert_to_numpy(v.value)
                   for i, v in enumerate(opt_vars)})
    if not _finite(arrays):
        return None
    path = os.path.join(directory, f"ckpt-{step:08d}.npz")
    with files.atomic_path(path) as tmp:
        np.savez(tmp, **arrays)
    for old in sorted(list_checkpoints(directory))[:-keep]:
        os.remove(old[1])
    return path


def list_checkpoints(directory: str) -> list[tuple[int, str]]:
    """Complete checkpoints in ``directory`` as sorted (step, path) pairs."""
    found = []
    for path in glob.glob(os.path.join(directory, "ckpt-*.npz")):
        match = _CKPT.fullmatch(os.path.basename(path))
        if match:
            found.append((int(match.group(1)), path))
    return sorted(found)


def read_checkpoint(path: str) -> dict:
    """A checkpoint's arrays by name; raises ``CheckpointError`` (one line naming ``path``) for
    a damaged file or one holding NaN or infinite values."""
    import zipfile

    try:
        with np.load(path, allow_pickle=False) as f:
            arrays = {k: f[k] for k in f.files}
    except (zipfile.BadZipFile, OSError, ValueError, KeyError, EOFError) as e:
        reason = str(e).splitlines()[0] if str(e) else type(e).__name__
        raise CheckpointError(f"{path}: damaged checkpoint ({reason})") from e
    if not _finite(arrays):
        raise CheckpointError(f"{path}: holds NaN or infinite values")
    return arrays


def restore_checkpoint(trainer, path: str) -> int:
    """Loads a checkpoint into the trainer (optimizer built first); returns its step (the
    training batches behind it; ``mixed_float16`` skips the optimizer's update on overflow, so
    the optimizer may count fewer). Raises ``CheckpointError`` for a damaged one (nothing is
    assigned then)."""
    trainer.optimizer.build(trainer.network.trainable_variables)
    net_vars, opt_vars = _variables(trainer)
    f = read_checkpoint(path)
    if len([k for k in f if k.startswith("net_")]) != len(net_vars) or \
            len([k for k in f if k.startswith("opt_")]) != len(opt_vars):
        raise config_lib.ConfigError(
            "model_dir", f"{path}: does not match this network or optimizer (another "
                         "--precision? mixed_float16 adds loss-scale state); use another "
                         "--model_dir or the run's own settings")
    for i, v in enumerate(net_vars):
        v.assign(f[f"net_{i}"])
    for i, v in enumerate(opt_vars):
        v.assign(f[f"opt_{i}"])
    return int(_CKPT.fullmatch(os.path.basename(path)).group(1))


def restore_newest_checkpoint(trainer, directory: str) -> tuple[int, str | None]:
    """Restores the newest readable checkpoint in ``directory``, logging one line for each newer
    damaged one it passes over (which is kept); returns (step, path), (0, None) when there is
    none. Raises ``ConfigError`` when checkpoints exist and none of them can be read."""
    found = list_checkpoints(directory)
    for step, path in reversed(found):
        try:
            return restore_checkpoint(trainer, path), path
        except CheckpointError as e:
            logging.warning("skipping %s; trying an older checkpoint", e)
    if found:
        raise config_lib.ConfigError(
            "model_dir", f"{directory}: no readable checkpoint ({len(found)} damaged); move "
                         "them away to start again, or use another --model_dir")
    return 0, None


def last_good_checkpoint(directory: str) -> str | None:
    """The newest checkpoint in ``directory`` that reads and holds only finite values."""
    for _, path in reversed(list_checkpoints(directory)):
        try:
            read_checkpoint(path)
            return path
        except CheckpointError:
            pass
    return None


# -- callbacks --------------------------------------------------------------------------------


# -- logs -------------------------------------------------------------------------------------
class SummaryWriter:
    """TensorBoard event files where TensorFlow is installed; without it, ``scalars.jsonl``
    (one JSON object per logged step) and sample PNGs in ``log_dir``."""

    def __init__(self, log_dir: str):
        self.log_dir = log_dir
        os.makedirs(log_dir, exist_ok=True)
        self._tf = None
        if data.tensorflow_available():
            self._tf = tf = data.import_tensorflow()
            self._writer = tf.summary.create_file_writer(log_dir)

    def scalars(self, step: int, values: dict) -> None:
        if self._tf is None:
            with open(os.path.join(self.log_dir, "scalars.jsonl"), "a") as f:
                f.write(json.dumps({"step": step, **values}) + "\n")
            return
        with self._writer.as_default(step=step):
            for name, value in values.items():
                self._tf.summary.scalar(name, value)

    def images(self, step: int, named: dict) -> None:
        """Writes uint8 images (H, W, 3) by name."""
        if self._tf is None:
            for name, image in named.items():
                images.write_image(os.path.join(self.log_dir, f"{name}_{step:08d}.png"), image)
            return
        with self._writer.as_default(step=step):
            for name, image in named.items():
                self._tf.summary.image(name, image[None], step=step)
        self._writer.flush()


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


# -- the job ----------------------------------------------------------------------------------
def load_style_image(config) -> np.ndarray:
    """The (first) style image, resized to ``style_size`` on its long side."""
    return load_style_images(config)[0]


def load_style_images(config) -> list[np.ndarray]:
    """The style images of ``config.style_image``, in the order of its new styles."""
    return [images.resize_long_side(images.read_image(path), config.style_size)
            for path in config.style_images()]


def trained_styles(config) -> tuple[int, ...]:
    """The indices of the styles a run trains: all of a new network's; only the new ones of a
    network that adds styles to an ``init_from`` multi-style network."""
    if config.task != "style":
        return ()
    first = len(config.inherited_styles)
    return tuple(range(first, first + len(config.new_style_names())))


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
    if len(config.style_names()) > 1:
        return data.MultiStyleImages(config.train_data, config.image_size,
                                     trained_styles(config), config.tfds_data_dir)
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
    """Builds and compiles the trainer in ``strategy``'s scope (a ``distribute.Distribution``
    or a ``tf.distribute.Strategy``; ``distribute.make_distribution(config.strategy)`` if None),
    with Adam at ``config.learning_rate`` unless ``optimizer`` (a callable making one) is given.
    Under ``mixed_float16`` Keras wraps the optimizer for loss scaling."""
    strategy = strategy or distribute.make_distribution(config.strategy)
    with strategy.scope():
        style = None
        if config.task == "style":
            style = [s.astype(np.float32) for s in load_style_images(config)]
            # Targets for every style of the network; inherited ones never train (any will do).
            style = [style[0]] * len(config.inherited_styles) + style
            style = style if len(style) > 1 else style[0]
        objective = losses.objective_from_config(config, style, loss_net)
        network = make_network(config)
        if config.task == "style" and config.inherited_styles:
            freeze_shared_weights(network)
        stability = {} if config.task != "style" else dict(
            stability_weight=config.stability_weight, stability_shift=config.stability_shift,
            stability_noise=config.stability_noise, seed=config.seed)
        trainer = PerceptualTrainer(network, objective, **stability)
        trainer.trained_styles = trained_styles(config)
        trainer.compile(optimizer=optimizer() if optimizer else make_optimizer(config),
                        jit_compile=jit_compile)
    return trainer


def make_optimizer(config):
    """Adam at ``config.learning_rate`` on its schedule, with an exponential moving average of
    the weights when ``config.ema`` > 0 (``ema_weights`` reads it)."""
    ema = dict(use_ema=True, ema_momentum=config.ema, ema_overwrite_frequency=None) \
        if config.ema else {}
    return keras.optimizers.Adam(schedules.learning_rate(config), **ema)


def ema_weights(trainer) -> list:
    """The network's weights (``get_weights`` order), with each trainable variable replaced by
    its exponential moving average where the optimizer keeps one."""
    optimizer = trainer.optimizer
    averages = getattr(optimizer, "_model_variables_moving_average", None)
    values = trainer.network.get_weights()
    if not getattr(optimizer, "use_ema", False) or not averages:
        return values
    trainable = {id(v): v for v in trainer.network.trainable_variables}
    # A network adding styles: the rows of the styles it does not train keep their values
    # (their gradients are exactly zero, but an average of a constant need not be it exactly,
    # and Keras writes the averages into the variables at the end of ``fit``).
    kept = _untrained_style_rows(trainer)
    untrained = getattr(trainer, "untrained_values", {})
    for i, variable in enumerate(trainer.network.weights):
        if id(variable) in trainable:
            average = keras.ops.convert_to_numpy(averages[optimizer._get_variable_index(variable)])
            if kept is not None and average.ndim == 2:
                average[kept] = untrained.get(i, values[i][kept])
            values[i] = average
    return values


def keep_untrained_values(trainer) -> None:
    """Records the values of the style rows this run does not train (a network adding
    styles), as they are now (after initialising or restoring), for ``ema_weights``."""
    kept = _untrained_style_rows(trainer)
    if kept is None:
        return
    trainable = {id(v) for v in trainer.network.trainable_variables}
    trainer.untrained_values = {
        i: keras.ops.convert_to_numpy(v)[kept] for i, v in enumerate(trainer.network.weights)
        if id(v) in trainable and len(v.shape) == 2}


def _untrained_style_rows(trainer):
    """Indices of the styles a multi-style network has but this run does not train, or None."""
    n = networks.num_styles(trainer.network)
    trained = getattr(trainer, "trained_styles", ())
    if n == 1 or not trained or len(trained) == n:
        return None
    return np.array([i for i in range(n) if i not in trained], np.int64)


def freeze_shared_weights(network) -> None:
    """Makes every layer but the conditional instance normalisations untrainable: adding a
    style trains only the styles' scales and shifts (of those, only the new styles' rows get
    gradients, as only they are in the batches)."""
    for layer in network.layers:
        if not isinstance(layer, networks.ConditionalInstanceNormalization):
            layer.trainable = False


def network_from_checkpoint(config, path: str):
    """The float32 network of checkpoint ``path`` of a run with ``config``, with the moving
    average of its weights where the run keeps one (what the run's export would hold)."""
    distribution = distribute.make_distribution("auto")
    with dtype_policy("float32"), distribution.scope():
        trainer = build_trainer(dataclasses.replace(config, precision="float32"), distribution,
                                jit_compile=False)
        restore_checkpoint(trainer, path)
        keep_untrained_values(trainer)
        values = ema_weights(trainer)
    with dtype_policy("float32"):
        network = make_network(config, name=config.name)
    network.set_weights(values)
    return network


def load_init_network(spec: str, models_dir: str = "savedmodels"):
    """The Keras network of the model ``spec`` (a ``.keras`` file, a SavedModel folder or a
    model name in ``models_dir``); raises ``ConfigError`` (``init_from``)."""
    from kperceptual.inference import loading as models

    try:
        source = models.load_model(spec, models_dir).network
    except (FileNotFoundError, ValueError) as e:
        raise config_lib.ConfigError("init_from", str(e)) from e
    if source is None:
        raise config_lib.ConfigError("init_from", f"{spec}: holds no Keras network")
    return source


def resolve_init_from(config):
    """``config`` for a style run whose ``init_from`` is a multi-style network and whose style
    images are all new styles: with that network's styles as ``inherited_styles`` (the run
    adds its styles to them, training only theirs). Any other ``init_from`` is fine-tuning (the
    same shape, every weight trains) and leaves ``config`` as it is. Raises ``ConfigError``
    where the style images repeat some of the network's styles but not exactly all."""
    if config.task != "style" or not config.init_from or config.inherited_styles:
        return config
    saved = os.path.join(config.model_dir, "config.json")
    if list_checkpoints(os.path.join(config.model_dir, "checkpoints")) and os.path.isfile(saved):
        with open(saved) as f:  # resuming: the run's own record (init_from is not read again)
            inherited = tuple(json.load(f).get("inherited_styles", ()))
        return dataclasses.replace(config, inherited_styles=inherited) if inherited else config
    source = load_init_network(config.init_from, config.export_dir)
    theirs = networks.style_names(source) if networks.num_styles(source) > 1 else ()
    ours = config.new_style_names()
    if not theirs or tuple(ours) == theirs:
        return config
    repeated = [n for n in ours if n in theirs]
    if repeated:
        raise config_lib.ConfigError(
            "style_image", f"{', '.join(repeated)}: already a style of {config.init_from} "
                           f"({', '.join(theirs)}); give only new styles to add them, or "
                           "exactly its styles to fine-tune it")
    return dataclasses.replace(config, inherited_styles=theirs)


def _copy_layers(network, source, spec: str, norm_rows) -> None:
    """Copies every weighted layer of ``source`` into the same-named layer of ``network``;
    a conditional instance normalisation's values go through ``norm_rows(values, layer)``
    first. Raises ``ConfigError`` (``init_from``) where the layers differ."""
    ours = {layer.name: layer for layer in network.layers}
    theirs_with_weights = [layer for layer in source.layers if layer.weights]
    if len(theirs_with_weights) != len([layer for layer in network.layers if layer.weights]):
        raise config_lib.ConfigError(
            "init_from", f"{spec}: its layers do not fit this network (another --norm, "
                         "--upsample, --padding or size?)")
    for theirs in theirs_with_weights:
        layer = ours.get(theirs.name)
        values = theirs.get_weights()
        if isinstance(layer, networks.ConditionalInstanceNormalization):
            values = norm_rows(values, layer)
        if layer is None or [tuple(v.shape) for v in values] != \
                [tuple(w.shape) for w in layer.weights]:
            raise config_lib.ConfigError(
                "init_from", f"{spec}: its layer {theirs.name} does not fit this network "
                             "(another --norm, --upsample, --padding or size?)")
        layer.set_weights(values)


def add_styles_from(network, source) -> None:
    """Copies a multi-style ``source`` into ``network``, which has its styles first and then
    new ones: every shared weight, and each normalisation layer's gamma and beta rows of the
    source's styles; the new styles start from the mean of the source's (a style near all of
    them rather than none). Raises ``ConfigError`` (``init_from``) where the shapes differ."""
    n = networks.num_styles(source)
    _copy_layers(network, source, source.name, lambda values, layer: [
        np.concatenate([v, np.repeat(v.mean(axis=0, keepdims=True), layer.num_styles - n,
                                     axis=0)]) for v in values])


def widen_to_styles(network, source, spec: str) -> None:
    """Starts the multi-style ``network`` from the one-style ``source``: every convolution
    copied, and each instance normalisation's scale and shift copied into every style's row of
    the conditional one. Raises ``ConfigError`` (``init_from``) where the layers differ."""
    _copy_layers(network, source, spec, lambda values, layer: [
        np.repeat(v[None], layer.num_styles, axis=0) for v in values])


def init_network_from(network, spec: str, inherited_styles=(),
                      models_dir: str = "savedmodels") -> None:
    """Copies the weights of the model ``spec`` (a ``.keras`` file, a SavedModel folder or a
    model name) into ``network``; raises ``ConfigError`` (``init_from``) unless every weight
    has the same shape. With ``inherited_styles`` (a network adding styles to ``spec``'s):
    ``add_styles_from``."""
    source = load_init_network(spec, models_dir)
    if inherited_styles:
        add_styles_from(network, source)
        return
    if networks.num_styles(network) > 1 and networks.num_styles(source) == 1:
        widen_to_styles(network, source, spec)
        return
    theirs = source.get_weights()
    ours = network.weights
    shapes = [tuple(w.shape) for w in theirs]
    if shapes != [tuple(v.shape) for v in ours]:
        raise config_lib.ConfigError(
            "init_from", f"{spec}: its weights do not fit this network (another --scale, "
                         "--norm, --upsample or size?); start from a model of the same shape")
    network.set_weights(theirs)


def _check_same_styles(config, saved: dict) -> None:
    """A model_dir of a multi-style network resumes only with the same styles (a one-style run
    may resume with another style image, as before multi-style networks)."""
    theirs = dataclasses.replace(
        config, style_image=saved.get("style_image", config.style_image),
        inherited_styles=tuple(saved.get("inherited_styles", ()))).style_names()
    ours = config.style_names()
    if (len(theirs) > 1 or len(ours) > 1) and theirs != ours:
        raise config_lib.ConfigError(
            "style_image", f"{config.model_dir} holds a network for the styles "
                           f"{', '.join(theirs)}; use another --model_dir or the same styles")


def _check_model_dir(config, write: bool = True) -> None:
    """A model_dir remembers its network; resuming with another architecture is an error.
    Writes the config there when it has none and ``write`` (the chief)."""
    path = os.path.join(config.model_dir, "config.json")
    if os.path.lexists(path):
        try:
            saved = json.loads(images.read_regular_file(path, 1 << 20, ValueError))
            if not isinstance(saved, dict):
                raise ValueError("not a JSON object")
        except (OSError, ValueError) as e:  # JSONDecodeError and UnicodeDecodeError too
            raise config_lib.ConfigError(
                "model_dir", f"{path}: unreadable ({str(e).splitlines()[0]}); restore it, or "
                             "use another --model_dir") from None
        # Early super-resolution runs did not record the task; their config has a scale.
        task = saved.get("task") or ("super_resolution" if "scale" in saved else "style")
        if task != config.task:
            raise config_lib.ConfigError(
                "model_dir", f"{config.model_dir} holds a {task} network; "
                             f"use another --model_dir for --task={config.task}")
        if task == "style":
            _check_same_styles(config, saved)
        for key, value in config.network_config().items():
            if key in ("num_styles", "style_names"):  # _check_same_styles
                continue
            if saved.get(key, NETWORK_DEFAULTS.get(key)) != value:
                raise config_lib.ConfigError(
                    key, f"{config.model_dir} holds a network trained with {key}={saved.get(key)}"
                         f"; use another --model_dir or the same --{key}")
        ours = json.loads(json.dumps(config.to_dict()))
        for key in config_lib.OBJECTIVE_FIELDS:
            if key in saved and key in ours and saved[key] != ours[key] and not (
                    key == "style_image" and _same_file(saved[key], ours[key])):
                raise config_lib.ConfigError(
                    key, f"{config.model_dir} holds a run trained with --{key}="
                         f"{_flag_value(saved[key])}; resume it with the same value, or use "
                         "another --model_dir (or --name) for a new run")
    elif write:
        files.write_atomically(path, json.dumps(config.to_dict(), indent=2).encode(),
                               overwrite=True)  # other workers may be reading it


def _same_file(a: str, b: str) -> bool:
    return os.path.exists(a) and os.path.exists(b) and os.path.samefile(a, b)


def _flag_value(value) -> str:
    return ",".join(map(str, value)) if isinstance(value, list) else str(value)


def train(config, distribution=None, verbose=1, optimizer=None) -> dict:
    """Runs a training job end to end; returns paths and numbers of what it did, and the
    trained ``network`` (float32).

    ``distribution`` defaults to ``distribute.make_distribution(config.strategy)``; ``optimizer``
    (a callable making one) to Adam at ``config.learning_rate``. Resumes from
    the newest checkpoint in ``config.model_dir`` (every worker of a cluster: the folder must be
    shared). Raises ``ConfigError`` for bad settings, ``TrainingDiverged`` if the loss stops
    being finite.
    """
    config_lib.validate(config)
    # First: MultiWorkerMirroredStrategy must exist before any other TensorFlow work.
    distribution = distribution or distribute.make_distribution(config.strategy)
    config = resolve_init_from(config)
    if config.task == "style" and config.inherited_styles:
        config_lib.validate(config)  # the names again, with the inherited ones
    if config.batch_size % distribution.replicas:
        raise config_lib.ConfigError(
            "batch_size", f"{config.batch_size} does not split evenly over "
                          f"{distribution.replicas} replicas")
    try:
        loader = data.resolve_loader(config.loader)
    except data.DataError as e:
        raise config_lib.ConfigError("loader", str(e)) from e
    try:
        source = make_source(config)
    except data.DataError as e:
        raise config_lib.ConfigError("train_data", str(e)) from e
    if loader == "py_dataset" and (source.kind == "tfds" or distribution.num_workers > 1):
        raise config_lib.ConfigError(
            "loader", "py_dataset cannot read tensorflow-datasets sources" if
            source.kind == "tfds" else "multi_worker reads its shards through tf.data; "
                                       "use --loader=auto")
    lock = os.path.join(config.model_dir, ".lock")
    try:  # one run at a time in a model_dir (the chief's lock; the workers share the folder)
        with files.exclusive_lock(lock) if distribution.is_chief else _no_lock():
            _check_model_dir(config, write=distribution.is_chief)
            precision = resolve_precision(config.precision)
            with dtype_policy(precision):
                return _train(config, distribution, source, loader, precision, verbose,
                              optimizer)
    except files.LockedError as e:
        raise config_lib.ConfigError(
            "model_dir", f"{config.model_dir} is in use by another training run ({e}); wait "
                         "for it to end, or use another --model_dir") from None


def _no_lock():
    import contextlib

    return contextlib.nullcontext()


def _train(config, distribution, source, loader, precision, verbose, optimizer) -> dict:
    checkpoint_dir = os.path.join(config.model_dir, "checkpoints")
    chief = distribution.is_chief
    if getattr(config, "loss", None) != "pixel":
        from kperceptual.losses import vgg16_weights as weights

        # Before the seed: converting fetched weights builds a VGG16, which would move the
        # random state, and the run would start elsewhere than every later one.
        weights.vgg16_weights(config.vgg_weights)
    keras.utils.set_random_seed(config.seed)  # the initial weights; every worker the same
    with distribution.scope():
        trainer = build_trainer(config, distribution, optimizer=optimizer,
                                jit_compile=choices.JIT_COMPILE[config.jit_compile])
        if chief:  # left by a run killed while writing a checkpoint
            files.remove_stale_temporaries(checkpoint_dir)
        start, resumed = restore_newest_checkpoint(trainer, checkpoint_dir)
        distribution.check_same_step(start, config.model_dir)
        if resumed:
            if isinstance(trainer.optimizer.learning_rate, keras.Variable):
                trainer.optimizer.learning_rate.assign(config.learning_rate)  # the flag wins
            logging.info("resuming from %s at step %d", resumed, start)
        elif config.init_from:
            inherited = getattr(config, "inherited_styles", ())
            init_network_from(trainer.network, config.init_from, inherited, config.export_dir)
            if inherited:
                logging.info("adding styles %s to %s (%s): training only their parameters",
                             ", ".join(config.new_style_names()), config.init_from,
                             ", ".join(inherited))
            else:
                logging.info("starting from the weights of %s", config.init_from)
        keep_untrained_values(trainer)
    monitor = TrainingMonitor(checkpoint_dir, config.checkpoint_every,
                              os.path.join(config.model_dir, "logs"), config.log_every,
                              config.sample_every, sample_inputs(config) if chief else [],
                              config.steps, chief=chief, start=start)
    started = time.perf_counter()
    if start < config.steps:
        logging.info("training %s on %s (%s), steps %d..%d, %s, loader %s", config.name,
                     source.describe(), distribution.describe(), start, config.steps,
                     precision, loader)
        batches = distribution.training_batches(source, config.batch_size, config.seed, start,
                                                loader, config.steps - start)
        try:
            with distribution.running():
                try:
                    trainer.fit(batches, epochs=1, steps_per_epoch=config.steps - start,
                                shuffle=False, callbacks=[monitor], verbose=verbose)
                except StopIteration:  # tf.data ended before its first batch
                    source.check_readable()
                    raise
                except KeyboardInterrupt:  # Ctrl-C: keep what was trained, then stop
                    saved = (save_checkpoint(trainer, checkpoint_dir, monitor.step)
                             if chief and monitor.step > start else None)
                    last = saved or last_good_checkpoint(checkpoint_dir)
                    raise TrainingInterrupted(
                        f"interrupted at step {monitor.step}; "
                        + (f"checkpoint {last} kept" if last else "no checkpoint yet")
                        + "; run the same command again to resume") from None
            source.check_readable()  # tf.data ends its stream when no file can be read
        except data.DataError as e:  # e.g. no file of the folder can be read
            raise config_lib.ConfigError("train_data", str(e)) from e
    elapsed = time.perf_counter() - started
    step = monitor.step
    if source.skipped:
        logging.warning("skipped %d unreadable training images", len(source.skipped))
    if monitor.diverged_at is not None:
        last = last_good_checkpoint(checkpoint_dir)
        kept = f"the last good checkpoint is {last}" if last else "no good checkpoint was saved"
        raise TrainingDiverged(f"training diverged (loss or weights NaN or infinite) at step "
                               f"{monitor.diverged_at}; {kept}; try a lower --learning_rate or "
                               "loss weights")
    # A fresh, strategy-free float32 copy of the network for saving and export.
    with dtype_policy("float32"):
        network = make_network(config, name=config.name)
    network.set_weights(ema_weights(trainer))  # the moving average, where there is one
    keras_path = export_path = None
    if chief:
        keras_path = os.path.join(config.model_dir, f"{config.name}.keras")
        with files.atomic_path(keras_path) as tmp:  # the previous one stays until it is whole
            network.save(tmp)
        export_path = export_saved_model(network, keras_path, config.export_dir, config.name)
    return {
        "steps": step,
        "trained_steps": step - start,
        "seconds": elapsed,
        "precision": precision,
        "backend": keras.backend.backend(),
        "distribution": distribution.describe(),
        "loader": loader,
        "keras_path": keras_path,
        "export_path": export_path,
        "skipped_images": dict(source.skipped),
        "network": network,
    }


def export_saved_model(network, keras_path: str, export_dir: str, name: str) -> str | None:
    """Exports the trained network to ``export_dir/name/<version>``; returns that path.

    Export needs TensorFlow. On the TensorFlow backend it runs here; on JAX or PyTorch it runs
    the saved ``keras_path`` through a TensorFlow-backend subprocess (the weights load on any
    backend); without TensorFlow it logs how to export later and returns None."""
    if keras.backend.backend() == "tensorflow":
        from kperceptual.serving import tf_saved_model

        return tf_saved_model.export_saved_model(network, export_dir, name)
    if not data.tensorflow_available():
        logging.warning("TensorFlow is not installed, so no SavedModel was written; where it "
                        "is, run: python -m kperceptual.export --model=%s --export_dir=%s "
                        "--name=%s", keras_path, export_dir, name)
        return None
    # The package's own folder on the path (it may not be installed); no GPU for TensorFlow.
    package_root = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
    env = {**os.environ, "KERAS_BACKEND": "tensorflow", "CUDA_VISIBLE_DEVICES": "",
           "PYTHONPATH": os.pathsep.join(filter(None, [package_root,
                                                       os.environ.get("PYTHONPATH")]))}
    try:
        done = subprocess.run([sys.executable, "-c", _EXPORT, keras_path, export_dir, name],
                              env=env, capture_output=True, text=True, timeout=3600)
    except subprocess.TimeoutExpired as e:
        raise OSError(f"exporting {keras_path} with the tensorflow backend took over an "
                      "hour; stopped") from e
    lines = done.stdout.strip().splitlines()
    if done.returncode or not lines:
        last = (done.stderr.strip().splitlines() or ["no error output"])[-1]
        raise OSError(f"exporting {keras_path} with the tensorflow backend failed: {last}")
    return lines[-1]


_EXPORT = ("import sys, keras; from kperceptual import networks; from kperceptual.serving import tf_saved_model; "
           "print(tf_saved_model.export_saved_model(keras.saving.load_model(sys.argv[1]), *sys.argv[2:]))")
