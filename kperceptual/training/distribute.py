"""Where training runs, on each Keras backend (backend-neutral; TensorFlow is imported only on
the TensorFlow backend, through ``kperceptual.training.tf_step``).

``make_distribution(name)`` turns ``--strategy`` into a ``Distribution``:

============== ======================================= ============================================
strategy       tensorflow                              jax / torch
============== ======================================= ============================================
auto           MirroredStrategy (GPUs, else one CPU)   jax: DataParallel over its devices if there
                                                       are several; torch: one device
mirrored       MirroredStrategy                        refused (a tf.distribute strategy)
multi_worker   MultiWorkerMirroredStrategy, TF_CONFIG  refused (a tf.distribute strategy)
data_parallel  refused (use mirrored)                  jax: keras.distribution.DataParallel over
                                                       every device; torch: refused
============== ======================================= ============================================
"""

from __future__ import annotations

import contextlib
import dataclasses

import keras

from kperceptual import config as config_lib
from kperceptual.data import sources as data


@dataclasses.dataclass
class Distribution:
    """How one training process places its work.

    Attributes:
        name: the ``--strategy`` it was made from.
        strategy: the ``tf.distribute.Strategy`` (TensorFlow backend) or None.
        jax_distribution: the ``keras.distribution.DataParallel`` (JAX backend) or None.
        replicas: model replicas in sync over all workers; the global batch must split evenly.
        worker_index, num_workers, is_chief: this process in a multi-worker cluster (0, 1, True
            otherwise). Only the chief writes checkpoints, logs, the ``.keras`` file and exports.
    """

    name: str
    strategy: object = None
    jax_distribution: object = None
    replicas: int = 1
    worker_index: int = 0
    num_workers: int = 1
    is_chief: bool = True

    def scope(self):
        """The context in which the trainer's variables are made."""
        if self.strategy is not None:
            return self.strategy.scope()
        if self.jax_distribution is not None:
            return self.jax_distribution.scope()
        return contextlib.nullcontext()

    def running(self):
        """The context in which ``fit`` runs: the JAX distribution shards each batch over its
        devices (a tf.distribute trainer remembers its strategy and needs none)."""
        if self.jax_distribution is not None:
            return self.jax_distribution.scope()
        return contextlib.nullcontext()

    def check_same_step(self, step: int, model_dir: str) -> None:
        """Raises ``ConfigError`` unless every worker resumes from the same step (they read the
        chief's checkpoints: ``model_dir`` must be one folder they all see)."""
        if self.num_workers > 1:
            from kperceptual.training import tf_step as tf_training

            low, high = tf_training.min_and_max(self.strategy, step)
            if low != high:
                raise config_lib.ConfigError(
                    "model_dir", f"the workers resume from different steps ({low} to {high}); "
                                 f"{model_dir} must be one folder that every worker sees")

    def describe(self) -> str:
        backend = keras.backend.backend()
        if self.num_workers > 1:
            return (f"{backend}, worker {self.worker_index} of {self.num_workers}"
                    f"{' (chief)' if self.is_chief else ''}, {self.replicas} replicas in all")
        return f"{backend}, {self.name}, {self.replicas} replica{'s' * (self.replicas > 1)}"

    def training_batches(self, source: data.TrainingImages, batch_size: int, seed: int,
                         start_step: int, loader: str, steps: int):
        """What ``fit`` reads: the global batches from ``start_step`` on. Several workers each
        read their own share of every global batch (``data`` shards the stream by position)."""
        if self.num_workers > 1:
            from kperceptual.data import tf_pipeline

            return tf_pipeline.distributed_dataset(source, self.strategy, batch_size, seed,
                                                   start_step)
        from kperceptual.data import loaders

        return loaders.batches(source, batch_size, seed, start_step, loader=loader,
                               num_batches=steps)


def _refuse(name: str, backend: str, why: str):
    raise config_lib.ConfigError("strategy", f"{name} is not available on the {backend} "
                                             f"backend (KERAS_BACKEND={backend}); {why}")


def make_distribution(name: str = "auto") -> Distribution:
    """The ``Distribution`` for ``--strategy=name`` on the running Keras backend; raises
    ``ConfigError`` for a strategy the backend does not have."""
    backend = keras.backend.backend()
    if backend == "tensorflow":
        if name == "data_parallel":
            _refuse(name, backend, "use --strategy=mirrored (one machine) or multi_worker")
        from kperceptual.training import tf_step as tf_training

        strategy = (tf_training.multi_worker_strategy() if name == "multi_worker"
                    else tf_training.mirrored_strategy())
        index, workers, chief = tf_training.worker(strategy)
        return Distribution(name, strategy=strategy, replicas=strategy.num_replicas_in_sync,
                            worker_index=index, num_workers=workers, is_chief=chief)
    if name in ("mirrored", "multi_worker"):
        _refuse(name, backend, "it is a tf.distribute strategy: set KERAS_BACKEND=tensorflow, "
                               "or use --strategy=auto" + (" or data_parallel" * (backend == "jax")))
    if backend == "jax":
        devices = keras.distribution.list_devices()
        if name == "data_parallel" or len(devices) > 1:
            return Distribution(name, jax_distribution=keras.distribution.DataParallel(
                devices=devices), replicas=len(devices))
        return Distribution(name)
    if name == "data_parallel":
        _refuse(name, backend, "use --strategy=auto (one device), or the jax backend")
    return Distribution(name)
