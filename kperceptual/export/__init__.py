"""Export of trained transformation networks: the TensorFlow-only part of kperceptual.

Everything that needs TensorFlow to write a model lives in this package (and in
``tf_pipeline.py`` and ``tf_training.py`` for training); the networks, losses and ``kperceptual.litert`` (which runs the
``.tflite`` files) do not import it.

* ``saved_model``: SavedModels in TF Serving's layout ``<name>/<version>/`` with uint8, float and
  encoded-image signatures, and TF Serving's ``models.config``.
* ``tflite``: TFLite files (float32, float16, dynamic-range, int8, int16x8).
* ``python -m kperceptual.export`` (``__main__``): the command line over both.
"""

from kperceptual import cli  # noqa: F401  (quietens TensorFlow before it is imported)

from kperceptual.export.saved_model import (  # noqa: E402
    MODELS_CONFIG, export_saved_model, latest_version_path, load_saved_model,
    update_models_config, versions)
from kperceptual.export.tflite import (  # noqa: E402
    QUANTIZATIONS, convert_tflite, tflite_filename)

__all__ = ["MODELS_CONFIG", "QUANTIZATIONS", "convert_tflite", "export_saved_model",
           "latest_version_path", "load_saved_model", "tflite_filename", "update_models_config",
           "versions"]
