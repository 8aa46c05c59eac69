"""Serving a trained network: TF Serving, TFLite/LiteRT, ONNX.

* ``layout``: TF Serving's ``<name>/<version>/`` layout, read without TensorFlow.
* ``litert``: runs exported ``.tflite`` files with LiteRT (no TensorFlow).
* TensorFlow-only, each named ``tf_*``: ``tf_saved_model`` (SavedModels with uint8, float and
  encoded-image signatures, pixel limits, TF Serving's ``models.config``), ``tf_tflite``
  (float32, float16, dynamic-range, int8, int16x8 files), ``tf_rewrite`` (the network rewritten
  for LiteRT's XNNPACK delegate before TFLite conversion), ``tf_onnx`` (ONNX through tf2onnx).

``python -m kperceptual.export`` is the command over them.
"""
