"""The distributed training step and its strategies (TensorFlow-only).

``kperceptual.training.trainer`` is backend-neutral: its ``PerceptualTrainer.compute_loss`` is the one
definition of the objective on every backend. On the TensorFlow backend, ``train_step`` here
runs it under a ``tf.distribute`` strategy: each replica's loss is its batch mean divided by the
number of replicas in sync (= its share of the global-batch sum over the global batch size), so
the gradients summed over replicas are those of the global-batch mean.

Strategies:

* ``mirrored``: ``MirroredStrategy`` over every visible GPU, or over the first CPU.
* ``multi_worker``: ``MultiWorkerMirroredStrategy``, one process per machine (or per worker),
  each with ``TF_CONFIG`` naming the cluster and its own task. It must be made before any
  other TensorFlow work in the process.
"""

from __future__ import annotations

import json
import os

import keras
import tensorflow as tf

from kperceptual import config as config_lib


def mirrored_strategy() -> tf.distribute.Strategy:
    """MirroredStrategy over all visible GPUs, or over the (first) CPU when there are none."""
    gpus = tf.config.list_logical_devices("GPU")
    if gpus:
        return tf.distribute.MirroredStrategy([d.name for d in gpus])
    return tf.distribute.MirroredStrategy([tf.config.list_logical_devices("CPU")[0].name])


def read_tf_config() -> dict:
    """The cluster description in ``TF_CONFIG``; raises ``ConfigError`` (``--strategy``) when it
    is missing or does not name this process's task in its cluster."""
    text = os.environ.get("TF_CONFIG", "")
    if not text:
        raise config_lib.ConfigError(
            "strategy", "multi_worker needs TF_CONFIG, e.g. "
                        '{"cluster": {"worker": ["host1:port", "host2:port"]}, '
                        '"task": {"type": "worker", "index": 0}} (see the README)')
    try:
        spec = json.loads(text)
        task = spec["task"]
        members = spec["cluster"][task["type"]]
        if not 0 <= int(task["index"]) < len(members):
            raise IndexError(f"task index {task['index']} is not below {len(members)}")
    except (ValueError, KeyError, TypeError, IndexError) as e:
        raise config_lib.ConfigError(
            "strategy", f"TF_CONFIG is not a valid cluster description ({e!r}); it needs "
                        "cluster.<type> (a list of host:port) and task.type, task.index") from e
    return spec


def multi_worker_strategy() -> tf.distribute.Strategy:
    """MultiWorkerMirroredStrategy from ``TF_CONFIG`` (checked first)."""
    read_tf_config()
    return tf.distribute.MultiWorkerMirroredStrategy()


def is_multi_worker(strategy) -> bool:
    return isinstance(strategy, tf.distribute.MultiWorkerMirroredStrategy)


def worker(strategy) -> tuple[int, int, bool]:
    """(this worker's index, the number of workers, whether it is the chief) under ``strategy``.
    The chief is task ``chief``, or worker 0 in a cluster without one."""
    if not is_multi_worker(strategy):
        return 0, 1, True
    resolver = strategy.cluster_resolver
    spec = resolver.cluster_spec().as_dict()
    workers = len(spec.get("chief", [])) + len(spec.get("worker", []))
    index = resolver.task_id + (len(spec.get("chief", [])) if resolver.task_type == "worker"
                                else 0)
    chief = resolver.task_type == "chief" or ("chief" not in spec and resolver.task_id == 0)
    return index, workers, chief


def min_and_max(strategy, value: int) -> tuple[int, int]:
    """The least and greatest ``value`` over all replicas of all workers."""
    def reduce():  # tf.distribute reduces by SUM or MEAN only: gather, then reduce
        values = tf.distribute.get_replica_context().all_gather(
            tf.constant([float(value)]), axis=0)
        return tf.reduce_min(values), tf.reduce_max(values)

    low, high = strategy.run(reduce)
    first = strategy.experimental_local_results
    return int(first(low)[0].numpy()), int(first(high)[0].numpy())


def _agree_on_overflow(gradients):
    """Under loss scaling, makes every replica see an overflow if any replica has one: the
    LossScaleOptimizer decides to skip a step from the local gradients, before they are summed,
    so replicas (and workers) would otherwise disagree, apply an inf, or lose step."""
    finite = tf.reduce_all([tf.reduce_all(tf.math.is_finite(g)) for g in gradients])
    overflows = tf.distribute.get_replica_context().all_reduce(
        "SUM", 1.0 - tf.cast(finite, tf.float32))
    return [tf.where(overflows == 0, g, tf.fill(tf.shape(g), tf.constant(float("nan"), g.dtype)))
            for g in gradients]


def symbolic_build(trainer, keras_build, iterator=None, data_batch=None):
    """What Keras's ``fit`` does first under a strategy: build the trainer from the shapes of a
    first batch. With several replicas Keras (3.x) gets that batch by one ``strategy.reduce``,
    which takes a tensor, not the ``{"pixels", "style"}`` dict a multi-style run reads, and
    fails; only shapes and dtypes matter, so here each tensor is this worker's first replica's."""
    strategy = getattr(trainer, "_distribute_strategy", None)  # None: Keras builds later
    if iterator is not None and strategy is not None:
        # Keras's epoch iterators give (step, iterator) or (first, last, iterator) by version.
        for item in iterator.enumerate_epoch():
            data_batch = tf.nest.map_structure(
                lambda value: strategy.experimental_local_results(value)[0], next(item[-1]))
            break
        iterator = None
    return keras_build(iterator=iterator, data_batch=data_batch)


def train_step(trainer, data) -> dict:
    """One optimiser step of ``trainer`` (a ``PerceptualTrainer``) on this replica's batch."""
    inputs, targets = trainer.split_batch(data)
    replicas = tf.distribute.get_replica_context().num_replicas_in_sync
    variables = trainer.network.trainable_variables
    with tf.GradientTape() as tape:
        outputs = trainer(inputs, training=True)
        loss = trainer.compute_loss(inputs, targets, outputs, training=True) / replicas
        scaled = trainer.optimizer.scale_loss(loss)  # mixed_float16: loss scaling
    gradients = tape.gradient(scaled, variables)
    if replicas > 1 and isinstance(trainer.optimizer, keras.optimizers.LossScaleOptimizer):
        gradients = _agree_on_overflow(gradients)
    trainer.optimizer.apply_gradients(zip(gradients, variables))
    results = trainer.metric_results()
    if is_multi_worker(tf.distribute.get_strategy()):
        # Keras reduces logs over workers with a mean along axis 0, which needs one.
        results = {name: tf.reshape(value, (1,)) for name, value in results.items()}
    return results
