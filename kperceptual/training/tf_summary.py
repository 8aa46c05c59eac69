"""TensorBoard event files (TensorFlow-only): loss terms and sample images of a training run,
for ``monitor.SummaryWriter`` where TensorFlow is installed."""

from __future__ import annotations

from kperceptual.tf_fence import import_tensorflow

tf = import_tensorflow()  # GPUs hidden from it under the JAX and PyTorch backends


class TensorBoardWriter:
    def __init__(self, log_dir: str):
        self._writer = tf.summary.create_file_writer(log_dir)

    def scalars(self, step: int, values: dict) -> None:
        with self._writer.as_default(step=step):
            for name, value in values.items():
                tf.summary.scalar(name, value)

    def images(self, step: int, named: dict) -> None:
        """Writes uint8 images (H, W, 3) by name."""
        with self._writer.as_default(step=step):
            for name, image in named.items():
                tf.summary.image(name, image[None], step=step)
        self._writer.flush()
