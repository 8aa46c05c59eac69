"""ONNX files of a transformation network (TensorFlow-only, like the rest of this package: Keras's
own ONNX export runs tf2onnx on the TensorFlow backend).

The file takes ``pixels`` float32 (B, H, W, 3) in [0, 255], any height and width (a multi-style
network also ``style_weights`` float32 (B, N)), and gives float32 pixels in [0, 255] of the
network's output size. onnxruntime runs it in Python, C++, C#, Java and in the browser
(onnxruntime-web); docs/onnx.md shows how.
"""

from __future__ import annotations

import os
import tempfile

import numpy as np


def onnx_filename(name: str) -> str:
    return f"{name}.onnx"


def convert_onnx(network) -> bytes:
    """The ONNX file's bytes for ``network`` (dynamic batch, height and width)."""
    from kperceptual import networks

    probe = np.zeros((1, 32, 32, 3), np.float32)
    n = networks.num_styles(network)
    # Keras exports only a network that has been called once.
    network.predict_on_batch(probe if n == 1 else [probe, np.full((1, n), 1 / n, np.float32)])
    with tempfile.TemporaryDirectory() as folder:
        path = os.path.join(folder, "network.onnx")
        network.export(path, format="onnx", verbose=False)
        with open(path, "rb") as f:
            return f.read()
