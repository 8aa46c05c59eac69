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
import json
import os
import time

import keras
from absl import logging

from kperceptual import choices
from kperceptual import config as config_lib
from kperceptual.data import sources as data
from kperceptual.training import distribute
from kperceptual.imaging import files
from kperceptual.imaging import images
from kperceptual.losses import perceptual as losses
from kperceptual import networks
from kperceptual.data import loaders
from kperceptual.training import schedules
from kperceptual.serving.backend_export import export_saved_model
from kperceptual.training.checkpoints import (ema_weights, keep_untrained_values,
                                              last_good_checkpoint,
                                              restore_checkpoint, restore_newest_checkpoint,
                                              save_checkpoint)
from kperceptual.training.init_from import (freeze_shared_weights, init_network_from,
                                            resolve_init_from)
from kperceptual.training.monitor import TrainingMonitor
from kperceptual.networks.precision import dtype_policy, resolve_precision

# Network settings that runs before them did not record, as those runs had them.
NETWORK_DEFAULTS = {"residual": "none", "head": "tanh",
                    "filters": list(config_lib.PAPER_FILTERS)}


class TrainingDiverged(RuntimeError):
    """The loss became NaN or infinite."""


class TrainingInterrupted(RuntimeError):
    """Ctrl-C (SIGINT) stopped training; the state was checkpointed."""


class _Untracked:
    """A value Keras's attribute tracking leaves alone."""

    def __init__(self, value):
        self.value = value


class PerceptualTrainer(keras.Model):
    """Trains ``network`` against an objective of ``kperceptual.losses`` (its loss network, if
    any, is frozen). Batches are images (style transfer: the input is its own content target)
    or (input, target) pairs (super-resolution: low-res, high-res).

    ``stability_weight`` > 0 adds ``losses.stability_loss`` to the objective: each step also
    runs the network on a window of every other input, ``stability_shift`` pixels smaller in
    each side and placed at an offset drawn from 0..``stability_shift`` in each direction (so
    shifts that do not keep the network's stride-4 grid are trained too), with Gaussian noise
    of ``stability_noise`` levels, and asks for the same output there.

    ``training_forward``: training steps compute the network by
    ``networks.training_forward`` (the same function and weights, its upsampling and output
    convolutions computed faster); None (default): on the TensorFlow backend, where it was
    measured (docs/benchmarks.md, "Training step profile")."""

    def __init__(self, network, objective, stability_weight=0.0, stability_shift=8,
                 stability_noise=0.0, seed=0, training_forward=None, **kwargs):
        super().__init__(**kwargs)
        self.network = network
        if training_forward is None:
            training_forward = keras.backend.backend() == "tensorflow"
        # Not tracked: it shares the network's layers and variables.
        self._training_forward = _Untracked(
            networks.training_forward(network) if training_forward else None)
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
        network = (self._training_forward.value if training and self._training_forward.value
                   else self.network)
        if isinstance(images, dict):
            style = keras.ops.one_hot(keras.ops.cast(images[data.STYLE_KEY], "int32"),
                                      self.num_styles)
            return network([keras.ops.cast(images[data.PIXELS_KEY], "float32"), style],
                           training=training)
        return network(keras.ops.cast(images, "float32"), training=training)

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

        def _maybe_symbolic_build(self, iterator=None, data_batch=None):
            from kperceptual.training import tf_step as tf_training

            return tf_training.symbolic_build(self, super()._maybe_symbolic_build, iterator,
                                              data_batch)


# -- the job ----------------------------------------------------------------------------------
def build_trainer(config, strategy=None, loss_net=None, optimizer=None,
                  jit_compile="auto", training_forward=None) -> PerceptualTrainer:
    """Builds and compiles the trainer in ``strategy``'s scope (a ``distribute.Distribution``
    or a ``tf.distribute.Strategy``; ``distribute.make_distribution(config.strategy)`` if None),
    with Adam at ``config.learning_rate`` unless ``optimizer`` (a callable making one) is given.
    Under ``mixed_float16`` Keras wraps the optimizer for loss scaling. ``training_forward``:
    as ``PerceptualTrainer``'s."""
    strategy = strategy or distribute.make_distribution(config.strategy)
    with strategy.scope():
        network = config.make_network()
        if getattr(config, "inherited_styles", ()) or getattr(config, "network_styles", ()):
            freeze_shared_weights(network)
        trainer = PerceptualTrainer(network, config.make_objective(loss_net),
                                    training_forward=training_forward,
                                    **config.trainer_options())
        trainer.trained_styles = config.trained_styles()
        trainer.compile(optimizer=optimizer() if optimizer else make_optimizer(config),
                        jit_compile=jit_compile)
    return trainer


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
        network = config.make_network(name=config.name)
    network.set_weights(values)
    return network


def make_optimizer(config):
    """Adam at ``config.learning_rate`` on its schedule, with an exponential moving average of
    the weights when ``config.ema`` > 0 (``ema_weights`` reads it)."""
    ema = dict(use_ema=True, ema_momentum=config.ema, ema_overwrite_frequency=None) \
        if config.ema else {}
    return keras.optimizers.Adam(schedules.learning_rate(config), **ema)


def _check_same_styles(config, saved: dict) -> None:
    """A model_dir of a multi-style network resumes only with the same styles (a one-style run
    may resume with another style image, as before multi-style networks)."""
    theirs = dataclasses.replace(
        config, style_image=saved.get("style_image", config.style_image),
        inherited_styles=tuple(saved.get("inherited_styles", ())),
        network_styles=tuple(saved.get("network_styles", ()))).style_names()
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
    if config.task == "style" and (config.inherited_styles or config.network_styles):
        config_lib.validate(config)  # the names again, with the network's
    if config.batch_size % distribution.replicas:
        raise config_lib.ConfigError(
            "batch_size", f"{config.batch_size} does not split evenly over "
                          f"{distribution.replicas} replicas")
    try:
        loader = loaders.resolve_loader(config.loader)
    except data.DataError as e:
        raise config_lib.ConfigError("loader", str(e)) from e
    try:
        source = config.make_source()
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
    if config.init_from and not resumed:
        # Outside the scope: the model it loads is read once, not made into distributed
        # variables (one copy per replica) of its own.
        inherited = getattr(config, "inherited_styles", ())
        one_style = config.new_style_names() if config.task == "style" else ()
        init_network_from(trainer.network, config.init_from, inherited, config.export_dir,
                          style=one_style[0] if len(one_style) == 1 else None)
        if inherited:
            logging.info("adding styles %s to %s (%s): training only their parameters",
                         ", ".join(config.new_style_names()), config.init_from,
                         ", ".join(inherited))
        elif getattr(config, "network_styles", ()):
            logging.info("tuning styles %s of %s (%s): training only their parameters",
                         ", ".join(config.new_style_names()), config.init_from,
                         ", ".join(config.network_styles))
        else:
            logging.info("starting from the weights of %s", config.init_from)
    keep_untrained_values(trainer)
    monitor = TrainingMonitor(checkpoint_dir, config.checkpoint_every,
                              os.path.join(config.model_dir, "logs"), config.log_every,
                              config.sample_every, config.sample_inputs() if chief else [],
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
        network = config.make_network(name=config.name)
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


