"""The one place that picks how training batches are loaded: tf.data where TensorFlow is
installed (``tf_pipeline``), else a ``keras.utils.PyDataset`` (``sources.ImageBatches``), or as
``--loader`` says. Backend-neutral; TensorFlow is imported only for the tf.data loader.
"""

from __future__ import annotations

from kperceptual.choices import LOADERS
from kperceptual.data.sources import DataError
from kperceptual.tf_fence import tensorflow_available


def resolve_loader(loader: str) -> str:
    """``tf_data`` or ``py_dataset`` for one of ``LOADERS``: ``auto`` is tf.data where TensorFlow
    is installed, else the PyDataset; raises ``DataError`` for tf.data without TensorFlow."""
    if loader not in LOADERS:
        raise DataError(f"unknown loader {loader!r}; choose one of {', '.join(LOADERS)}")
    if loader == "auto":
        return "tf_data" if tensorflow_available() else "py_dataset"
    if loader == "tf_data" and not tensorflow_available():
        raise DataError("tf_data needs TensorFlow, which is not installed; use py_dataset")
    return loader


def batches(source, batch_size: int, seed: int = 0, start_step: int = 0, loader: str = "auto",
            num_batches: int | None = None):
    """``source``'s batches (a ``sources.TrainingImages``): the tf.data dataset (only its
    first ``num_batches`` if given) or the PyDataset, as ``resolve_loader(loader)`` says.
    ``batch_size`` is the global batch; ``start_step`` skips the batches a resumed run has
    already trained on."""
    if resolve_loader(loader) == "py_dataset":
        return source.py_dataset(batch_size, seed, start_step, num_batches)
    from kperceptual.data import tf_pipeline

    ds = tf_pipeline.dataset(source, batch_size, seed, start_step)
    return ds if num_batches is None else ds.take(num_batches)
