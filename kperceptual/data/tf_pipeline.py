"""tf.data input pipelines (TensorFlow-only).

``dataset`` streams a ``kperceptual.data.sources.TrainingImages`` source (a folder, ``skimage`` or
``tfds:``) as prefetched uint8 batches: the batches of its backend-neutral ``ImageBatches``, or
for multi-worker training one shard of each global batch. ``distributed_dataset`` gives every
input pipeline of a ``tf.distribute`` strategy its shard.

Examples are decoded in parallel by the source's numpy functions (``tf.numpy_function``) in a
deterministic order; bad files are filtered out after decoding, so they never stop a run.
"""

from __future__ import annotations

from kperceptual.data.sources import DataError, MultiStyleImages, TrainingImages
from kperceptual.tf_fence import import_tensorflow

tf = import_tensorflow()  # GPUs hidden from it under the JAX and PyTorch backends


def _is_ok(example, ok):
    return ok


def _example_only(example, ok):
    return example


def _decode(source: TrainingImages, fn, *args):
    """(example, ok) from ``fn(*args)``, one of the source's ``_load_*`` methods."""
    shapes = source.output_shapes()
    outputs = tf.numpy_function(fn, list(args), (tf.uint8,) * len(shapes) + (tf.bool,),
                                stateful=False)
    for output, shape in zip(outputs, shapes):
        output.set_shape(shape)
    outputs[-1].set_shape(())
    arrays = tuple(outputs[:-1])
    return (arrays[0] if len(arrays) == 1 else arrays), outputs[-1]


def _examples(source: TrainingImages, seed: int, start: int, keep=None) -> tf.data.Dataset:
    """Unbatched (example, ok) pairs, in a deterministic order from stream position ``start``;
    only the positions ``keep`` accepts when it is given (chosen before decoding)."""
    if source.kind not in ("folder", "skimage"):
        return _tfds_examples(source, seed, start, keep)

    def files():  # ends once no file can be read: fit stops, and the trainer says why
        for name, position in source.file_stream(seed, start):
            if source.none_readable():
                return
            if keep is None or keep(position):
                yield name, position

    ds = tf.data.Dataset.from_generator(
        files, output_signature=(tf.TensorSpec((), tf.string), tf.TensorSpec((), tf.int64)))
    return ds.map(lambda p, k: _decode(source, source.load_file, p, k, seed),
                  num_parallel_calls=tf.data.AUTOTUNE, deterministic=True)


def _tfds_examples(source: TrainingImages, seed: int, start: int, keep=None) -> tf.data.Dataset:
    import tensorflow_datasets as tfds

    source.builder.download_and_prepare()
    ds = source.builder.as_dataset(
        split=source.split, shuffle_files=False,
        decoders={source.image_key: tfds.decode.SkipDecoding()})
    ds = ds.map(lambda ex: ex[source.image_key])
    ds = ds.enumerate().shuffle(4096, seed=seed, reshuffle_each_iteration=True).repeat()
    ds = ds.skip(start).enumerate(start)  # cheap: images are still encoded here
    if keep is not None:
        ds = ds.filter(lambda k, ex: keep(k))
    return ds.map(lambda k, ex: _decode(source, source.load_bytes, ex[1], ex[0], k, seed),
                  num_parallel_calls=tf.data.AUTOTUNE, deterministic=True)


def shard_batch_size(batch_size: int, num_shards: int = 1, shard_index: int = 0) -> int:
    """The batch each of ``num_shards`` shards of a global ``batch_size`` gives; raises
    ``DataError`` unless the shards split it evenly and ``shard_index`` is one of them."""
    if batch_size <= 0 or num_shards <= 0 or batch_size % num_shards:
        raise DataError(f"a batch of {batch_size} does not split evenly into {num_shards} "
                        "shards")
    if not 0 <= shard_index < num_shards:
        raise DataError(f"shard index {shard_index} is not in 0..{num_shards - 1}")
    return batch_size // num_shards


def dataset(source: TrainingImages, batch_size: int, seed: int = 0, start_step: int = 0,
            num_shards: int = 1, shard_index: int = 0) -> tf.data.Dataset:
    """An endless dataset of uint8 batches, prefetched: (batch, size, size, 3) images, or
    (low-res, high-res) batch pairs for ``SuperResolutionPairs``.

    ``batch_size`` is the global batch (all replicas together); ``start_step`` skips the
    ``start_step * batch_size`` stream positions a resumed run has already trained on. With
    ``num_shards`` > 1 this is shard ``shard_index``: batches of ``batch_size // num_shards``, its
    k-th batch the ``shard_index``-th part of the k-th global batch, so the shards' k-th batches
    side by side are the unsharded k-th batch (while no file is bad: a bad file shortens only its
    own shard's batch, which then takes the shard's next example).
    """
    per_shard = shard_batch_size(batch_size, num_shards, shard_index)
    keep = None if num_shards == 1 else (  # on ints and on int64 tensors
        lambda position: (position % batch_size) // per_shard == shard_index)

    ds = _examples(source, seed, start_step * batch_size, keep)
    ds = ds.filter(_is_ok).map(_example_only)
    ds = ds.batch(per_shard, drop_remainder=True)
    if isinstance(source, MultiStyleImages):  # {"pixels": ..., "style": ...}
        ds = ds.map(source.batch_structure)
    return ds.prefetch(tf.data.AUTOTUNE)


def _to_float32(*arrays):
    arrays = tf.nest.map_structure(lambda a: tf.cast(a, tf.float32), arrays)
    return arrays if len(arrays) > 1 else arrays[0]


def distributed_dataset(source: TrainingImages, strategy, batch_size: int, seed: int = 0,
                        start_step: int = 0):
    """``dataset`` for training under ``strategy`` (``MultiWorkerMirroredStrategy``), through
    ``strategy.distribute_datasets_from_function``: input pipeline i of n (one per worker) reads
    shard i of n of each global ``batch_size`` batch, split in turn over its worker's replicas.
    Batches are float32: Keras averages a first batch over the workers to build the model, and
    collective ops do not reduce uint8."""
    def pipeline(context: tf.distribute.InputContext) -> tf.data.Dataset:
        n, i = context.num_input_pipelines, context.input_pipeline_id
        per_shard = shard_batch_size(batch_size, n, i)
        per_replica = context.get_per_replica_batch_size(batch_size)
        ds = dataset(source, batch_size, seed, start_step, n, i)
        if per_replica != per_shard:  # several replicas on this worker, in order
            ds = ds.rebatch(per_replica)
        return ds.map(_to_float32)

    return strategy.distribute_datasets_from_function(pipeline)
