"""TFLite conversion of transformation networks (TensorFlow-only; the files run with LiteRT,
``kperceptual.serving.litert``).

The model takes float32 pixels (1, H, W, 3) in [0, 255] and returns float32 pixels of the same
shape, whatever the quantisation. The network is converted as ``tf_rewrite.for_xnnpack``
rewrites it, in ops that LiteRT's XNNPACK delegate takes (``xnnpack=False``: as its layers are
written, which LiteRT ran 1.5-2.3x slower). A multi-style network's model also takes
``style_weights`` (1, N), unless it is fixed to one style or mix (``style_weights`` given at
conversion: the network bound to it, ``networks.bind_style``); calibrated quantisation needs it
fixed. ``input_size=0`` keeps height and width dynamic (the runtime
resizes the input tensor); N fixes them to N x N.

Quantisation (``QUANTIZATIONS``):

* ``none``: float32.
* ``float16``: float16 weights (half the file), computed in float32 on CPUs.
* ``dynamic``: int8 weights, activations quantised on the fly ("dynamic range").
* ``int8``: full-integer post-training quantisation, int8 weights and activations, calibrated on
  a representative set of photos; ops without an int8 kernel fall back to float32 kernels.
  Instance normalisation limits it: its input, a conv output, is quantised per tensor while its
  channels' spreads differ about tenfold, and normalising by each channel's spread amplifies the
  rounding error of the narrow channels.
* ``int16x8``: int16 activations, int8 weights (TFLite's experimental 16x8 mode), the same
  calibration and the size of ``int8``, more accurate than ``dynamic``. Both calibrated modes do
  far worse on photos unlike the calibration set, LiteRT runs the 16x8 model much slower than
  float32 on CPUs, and at 1024x1024 a normalisation's RSQRT fails on a quantised input of 0: a
  format to try, not to ship. The measured accuracy and speed of every format are in the
  README's TFLite section and docs/benchmarks.md (``tests/serving/test_parity.py`` holds the
  floors).

Calibration (``calibration_batches``) sets the activation ranges from the photos it is given, so
they should look like what the model will see: a folder of the user's own photos is best. The
default source, ``skimage``, holds only 5 distinct photos (scikit-image's astronaut, chelsea,
coffee, rocket and stereo_motorcycle); each step takes a random crop and flip of the next photo,
so 32 steps are 32 different crops but still of those 5 images.
"""

from __future__ import annotations

import tempfile
from typing import Iterable

import keras
import numpy as np
import tensorflow as tf

from kperceptual.serving.tf_saved_model import apply_with_margin

QUANTIZATIONS = ("none", "float16", "dynamic", "int8", "int16x8")
CALIBRATED = ("int8", "int16x8")


def tflite_filename(name: str, quantize: str, input_size: int = 0) -> str:
    """``<name>_<quantize>.tflite``, or ``<name>_<quantize>_<N>.tflite`` for a fixed size."""
    return f"{name}_{quantize}{f'_{input_size}' if input_size else ''}.tflite"


def convert_tflite(network: keras.Model, quantize: str = "none", input_size: int = 0,
                   calibration: Iterable[np.ndarray] | None = None,
                   style_weights=None, xnnpack: bool = True) -> bytes:
    """The TFLite flatbuffer of ``network`` (a multi-style one fixed to ``style_weights`` (N,)
    when given, else with a ``style_weights`` input).

    ``xnnpack`` (the default) converts the network as ``tf_rewrite.for_xnnpack`` rewrites it, in
    ops that LiteRT's XNNPACK delegate takes (the same outputs up to float32 rounding); False
    converts the layers as they are written (the files before that rewrite).

    ``calibration`` (for ``int8`` and ``int16x8``) yields float32 batches (1, H, W, 3) in
    [0, 255]; it is iterated once.
    """
    from kperceptual import networks
    from kperceptual.serving import tf_rewrite

    if quantize not in QUANTIZATIONS:
        raise ValueError(f"unknown quantisation {quantize!r}; expected one of {QUANTIZATIONS}")
    if quantize in CALIBRATED and calibration is None:
        raise ValueError(f"{quantize} quantisation needs calibration images")
    if style_weights is not None:
        network = networks.bind_style(network, style_weights)
    num_styles = networks.num_styles(network)
    if num_styles > 1 and quantize in CALIBRATED:
        raise ValueError(f"{quantize} quantisation of a multi-style network needs one style "
                         "fixed (style_weights; --style)")
    margin = networks.border_margin(network)
    if xnnpack:
        network = tf_rewrite.for_xnnpack(network)
    side = input_size or None
    archive = keras.export.ExportArchive()
    archive.track(network)
    pixels_spec = tf.TensorSpec((1, side, side, 3), tf.float32, name="pixels")
    if num_styles > 1:
        archive.add_endpoint(
            "serving_default", lambda pixels, style_weights: apply_with_margin(
                lambda padded: network([padded, style_weights], training=False), pixels,
                margin),
            input_signature=[pixels_spec, tf.TensorSpec((1, num_styles), tf.float32,
                                                        name="style_weights")])
    else:
        archive.add_endpoint("serving_default", lambda pixels: apply_with_margin(
            lambda padded: network(padded, training=False), pixels, margin),
            input_signature=[pixels_spec])
    with tempfile.TemporaryDirectory(prefix="kperceptual-tflite-") as tmp:
        archive.write_out(tmp, verbose=False)
        converter = tf.lite.TFLiteConverter.from_saved_model(tmp)
        if quantize != "none":
            converter.optimizations = [tf.lite.Optimize.DEFAULT]
        if quantize == "float16":
            converter.target_spec.supported_types = [tf.float16]
        if quantize in CALIBRATED:
            converter.representative_dataset = lambda: ([batch] for batch in calibration)
            integer_ops = (tf.lite.OpsSet.TFLITE_BUILTINS_INT8 if quantize == "int8" else
                           tf.lite.OpsSet.EXPERIMENTAL_TFLITE_BUILTINS_ACTIVATIONS_INT16_WEIGHTS_INT8)
            # Float kernels where an op has no integer one; input and output stay float32.
            converter.target_spec.supported_ops = [integer_ops, tf.lite.OpsSet.TFLITE_BUILTINS]
        return converter.convert()


# Calibration photos are read as squares this much larger than the crops taken from them.
CALIBRATION_MARGIN = 1.25


def calibration_batches(source: str, steps: int, image_size: int,
                        seed: int = 0) -> Iterable[np.ndarray]:
    """``steps`` float32 batches (1, image_size, image_size, 3) from the photos of ``source`` (a
    folder or ``skimage``).

    The training input pipeline (``kperceptual.data.sources``) gives each photo, in a seeded shuffled
    order that repeats after the last one, as a centre square ``CALIBRATION_MARGIN`` times
    ``image_size``; each step takes a random ``image_size`` crop of it, flipped left to right
    half the time, so a source with fewer photos than ``steps`` still gives different crops.
    """
    from kperceptual.data import sources as data
    from kperceptual.data import tf_pipeline

    photos = data.TrainingImages(source, int(round(image_size * CALIBRATION_MARGIN)))
    rng = np.random.default_rng(seed)
    for batch in tf_pipeline.dataset(photos, batch_size=1, seed=seed).take(steps):
        square = batch.numpy()[0]
        top, left = rng.integers(0, square.shape[0] - image_size + 1, size=2)
        crop = square[top:top + image_size, left:left + image_size]
        if rng.random() < 0.5:
            crop = crop[:, ::-1]
        yield np.ascontiguousarray(crop, dtype=np.float32)[None]
