"""Trained networks by name or path, for every command that applies one.

A model is a name under ``savedmodels/`` (its newest version), a SavedModel folder, or a
``.keras`` file. SavedModels need TensorFlow; ``.keras`` files load on any Keras backend.
"""

from __future__ import annotations

import os

import numpy as np


def load_model(spec: str, models_dir: str = "savedmodels"):
    """Returns (name, fn) where fn maps float32 pixels (B, H, W, 3) to pixels in [0, 255]."""
    if spec.endswith(".keras"):
        if not os.path.isfile(spec):
            raise FileNotFoundError(f"{spec}: no such file")
        import keras

        from kperceptual import networks  # noqa: F401  (registers the classes)

        model = keras.saving.load_model(spec)
        return os.path.splitext(os.path.basename(spec))[0], lambda x: np.asarray(model(x))
    from kperceptual import export

    path = spec if os.path.isdir(spec) else export.latest_version_path(models_dir, spec)
    if path is None or not os.path.isfile(os.path.join(path, "saved_model.pb")):
        raise FileNotFoundError(f"{spec}: not a .keras file, a SavedModel folder, or a model "
                                f"name in {models_dir}/")
    path = os.path.normpath(path)
    name = os.path.basename(path)
    if name.isdigit():  # savedmodels/<name>/<version>
        name = os.path.basename(os.path.dirname(path))
    return name, export.load_saved_model(path)
