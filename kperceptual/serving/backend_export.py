"""Exporting a trained network as a SavedModel from any Keras backend: in process on TensorFlow,
in a TensorFlow subprocess from JAX or PyTorch (the ``.keras`` file is the hand-over), and not at
all where TensorFlow is not installed.
"""

from __future__ import annotations

import os
import subprocess
import sys

import keras
from absl import logging

from kperceptual.tf_fence import tensorflow_available

# Network settings that runs before them did not record, as those runs had them.


def export_saved_model(network, keras_path: str, export_dir: str, name: str) -> str | None:
    """Exports the trained network to ``export_dir/name/<version>``; returns that path.

    Export needs TensorFlow. On the TensorFlow backend it runs here; on JAX or PyTorch it runs
    the saved ``keras_path`` through a TensorFlow-backend subprocess (the weights load on any
    backend); without TensorFlow it logs how to export later and returns None."""
    if keras.backend.backend() == "tensorflow":
        from kperceptual.serving import tf_saved_model

        verbosity = logging.get_verbosity()
        logging.set_verbosity(logging.WARNING)  # not TensorFlow's SavedModel chatter
        try:
            return tf_saved_model.export_saved_model(network, export_dir, name)
        finally:
            logging.set_verbosity(verbosity)
    if not tensorflow_available():
        logging.warning("TensorFlow is not installed, so no SavedModel was written; where it "
                        "is, run: python -m kperceptual.export --model=%s --export_dir=%s "
                        "--name=%s", keras_path, export_dir, name)
        return None
    # The package's own folder on the path (it may not be installed); no GPU for TensorFlow.
    package_root = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
    env = {**os.environ, "KERAS_BACKEND": "tensorflow", "CUDA_VISIBLE_DEVICES": "",
           "PYTHONPATH": os.pathsep.join(filter(None, [package_root,
                                                       os.environ.get("PYTHONPATH")]))}
    try:
        done = subprocess.run([sys.executable, "-c", _EXPORT, keras_path, export_dir, name],
                              env=env, capture_output=True, text=True, timeout=3600)
    except subprocess.TimeoutExpired as e:
        raise OSError(f"exporting {keras_path} with the tensorflow backend took over an "
                      "hour; stopped") from e
    lines = done.stdout.strip().splitlines()
    if done.returncode or not lines:
        last = (done.stderr.strip().splitlines() or ["no error output"])[-1]
        raise OSError(f"exporting {keras_path} with the tensorflow backend failed: {last}")
    return lines[-1]


_EXPORT = ("import sys, keras; from kperceptual import networks; from kperceptual.serving import tf_saved_model; "
           "print(tf_saved_model.export_saved_model(keras.saving.load_model(sys.argv[1]), *sys.argv[2:]))")
