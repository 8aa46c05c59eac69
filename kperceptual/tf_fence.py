"""The TensorFlow fence: the one place backend-neutral code asks whether TensorFlow is installed
and imports it. Everything that needs TensorFlow lives in a module named ``tf_*``
(``data/tf_pipeline.py``, ``training/tf_step.py``, ``training/tf_summary.py``,
``serving/tf_saved_model.py``, ``serving/tf_tflite.py``, ``serving/tf_onnx.py``) and is imported
only where TensorFlow is there and wanted; everything else runs on every Keras backend.
"""

from __future__ import annotations

import functools


@functools.cache
def tensorflow_available() -> bool:
    """Whether TensorFlow can be imported (asked once; imports it, through
    ``import_tensorflow``, which keeps it off the GPUs of the JAX and PyTorch backends)."""
    try:
        import_tensorflow()
    except ImportError:
        return False
    return True


def import_tensorflow():
    """TensorFlow, for what only it does (tf.data, TensorBoard logs). Under the JAX or PyTorch
    backend the GPUs are hidden from it first, or it would take their memory."""
    import keras
    import tensorflow as tf

    if keras.backend.backend() != "tensorflow":
        try:
            tf.config.set_visible_devices([], "GPU")
        except RuntimeError:  # TensorFlow had already started: it kept what it has
            pass
    return tf
