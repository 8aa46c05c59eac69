"""Export of trained transformation networks (TensorFlow-only).

``export_saved_model`` writes a SavedModel in TF Serving's layout, ``EXPORT_DIR/<name>/<version>/``.
The version is written to a temporary folder and renamed into place, so a server polling the
folder never sees half a model; versions count up from 1 and nothing existing is replaced.

Signatures (any batch, height and width):

* ``serving_default``: ``images`` uint8 (B, H, W, 3) -> ``outputs`` uint8 (B, H, W, 3)
* ``serving_float``:   ``images`` float32 in [0, 255]  -> ``outputs`` uint8
"""

from __future__ import annotations

import os
import shutil
import tempfile

import keras
import tensorflow as tf


def versions(model_dir: str) -> list[int]:
    """Existing integer versions under ``EXPORT_DIR/<name>``."""
    if not os.path.isdir(model_dir):
        return []
    return sorted(int(d) for d in os.listdir(model_dir)
                  if d.isdigit() and os.path.isdir(os.path.join(model_dir, d)))


def _to_uint8(pixels):
    return tf.cast(tf.clip_by_value(tf.round(pixels), 0.0, 255.0), tf.uint8)


def export_saved_model(network: keras.Model, export_dir: str, name: str,
                       version: int | None = None) -> str:
    """Exports ``network`` to ``export_dir/name/version``; returns that path."""
    model_dir = os.path.join(export_dir, name)
    existing = versions(model_dir)
    if version is None:
        version = (existing[-1] + 1) if existing else 1
    target = os.path.join(model_dir, str(version))
    if os.path.exists(target):
        raise FileExistsError(f"{target}: already exists; choose another version")
    os.makedirs(model_dir, exist_ok=True)

    archive = keras.export.ExportArchive()
    archive.track(network)

    def stylise(images):
        return {"outputs": _to_uint8(network(tf.cast(images, tf.float32), training=False))}

    archive.add_endpoint("serving_default", stylise,
                         input_signature=[tf.TensorSpec((None, None, None, 3), tf.uint8,
                                                        name="images")])
    archive.add_endpoint("serving_float", stylise,
                         input_signature=[tf.TensorSpec((None, None, None, 3), tf.float32,
                                                        name="images")])
    tmp = tempfile.mkdtemp(prefix=f".{version}.tmp-", dir=model_dir)
    try:
        archive.write_out(tmp, verbose=False)
        os.replace(tmp, target)
    finally:
        if os.path.exists(tmp):
            shutil.rmtree(tmp)
    return target


def latest_version_path(export_dir: str, name: str) -> str | None:
    """``export_dir/name/<highest version>`` or None."""
    found = versions(os.path.join(export_dir, name))
    return os.path.join(export_dir, name, str(found[-1])) if found else None


def load_saved_model(path: str):
    """A callable: float32 pixels (B, H, W, 3) in [0, 255] -> uint8 outputs, from a SavedModel."""
    signature = tf.saved_model.load(path).signatures["serving_float"]
    return lambda pixels: signature(images=tf.constant(pixels, tf.float32))["outputs"].numpy()
