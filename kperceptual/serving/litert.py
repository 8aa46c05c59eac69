"""Run exported ``.tflite`` transformation networks with LiteRT (``ai-edge-litert``).

No TensorFlow here: a ``.tflite`` file and this module are all a device needs.
"""

from __future__ import annotations

import os

import numpy as np


def available_cpus() -> int:
    """The CPUs this process may run on (its affinity mask where the OS has one)."""
    try:
        return len(os.sched_getaffinity(0))
    except (AttributeError, OSError):
        return os.cpu_count() or 1


class TFLiteModel:
    """A ``.tflite`` network from ``kperceptual.export``: float32 pixels (B, H, W, 3) in [0, 255]
    in, float32 pixels of the same shape out.

    The file holds a batch-1 model; each batch element runs in turn. A dynamic-size model
    (exported with ``--input_size=0``) takes any height and width; a fixed-size one raises
    ValueError for any other size. A multi-style network's model (``num_styles`` > 1) also
    takes ``style_weights`` (N,) or (B, N).

    ``num_threads``: the threads LiteRT computes with; None (the default) is every CPU this
    process may use. (LiteRT's own default, when it is given None, is one thread: its XNNPACK
    delegate starts no thread pool.)
    """

    def __init__(self, path: str, num_threads: int | None = None):
        from ai_edge_litert.interpreter import Interpreter

        self.path = path
        self.num_threads = int(num_threads) if num_threads is not None else available_cpus()
        self._interpreter = Interpreter(model_path=path, num_threads=self.num_threads)
        inputs = sorted(self._interpreter.get_input_details(), key=lambda d: -len(d["shape"]))
        self._input = inputs[0]  # the pixels (rank 4); then style weights (rank 2), if any
        self._style = inputs[1] if len(inputs) > 1 else None
        self.num_styles = int(self._style["shape"][-1]) if self._style is not None else 1
        self._output = self._interpreter.get_output_details()[0]
        if self._input["dtype"] != np.float32 or self._output["dtype"] != np.float32:
            raise ValueError(f"{path}: expected float32 input and output, got "
                             f"{np.dtype(self._input['dtype'])} and "
                             f"{np.dtype(self._output['dtype'])}")
        side = tuple(int(n) for n in self._input["shape_signature"][1:3])
        self.input_size = None if -1 in side else side  # (height, width) of a fixed-size model
        self._shape = None  # allocated on the first call (a dynamic model's default is 1x1)

    def __call__(self, pixels, style_weights=None) -> np.ndarray:
        pixels = np.asarray(pixels, dtype=np.float32)
        if (style_weights is None) != (self._style is None):
            raise ValueError(f"{self.path}: " + ("a multi-style model; give style weights"
                                                 if self._style is not None
                                                 else "has one style; takes no style weights"))
        if style_weights is not None:
            style_weights = np.broadcast_to(np.asarray(style_weights, np.float32),
                                            (len(pixels), self.num_styles))
        if pixels.ndim != 4 or pixels.shape[-1] != 3:
            raise ValueError(f"{self.path}: expected pixels (batch, height, width, 3), got shape "
                             f"{pixels.shape}")
        if self.input_size is not None and pixels.shape[1:3] != self.input_size:
            raise ValueError(f"{self.path}: fixed input size {self.input_size[0]}x"
                             f"{self.input_size[1]}, got {pixels.shape[1]}x{pixels.shape[2]} "
                             "(export with --input_size=0 for any size)")
        shape = (1, *pixels.shape[1:])
        if shape != self._shape:
            self._interpreter.resize_tensor_input(self._input["index"], shape)
            self._interpreter.allocate_tensors()
            self._shape = shape
        outputs = []
        for i, image in enumerate(pixels):
            self._interpreter.set_tensor(self._input["index"], image[None])
            if style_weights is not None:
                self._interpreter.set_tensor(self._style["index"],
                                             np.ascontiguousarray(style_weights[i:i + 1]))
            self._interpreter.invoke()
            outputs.append(self._interpreter.get_tensor(self._output["index"])[0])
        return np.stack(outputs)
