"""Apply a trained network to images: ``python -m kperceptual.stylize --model=M INPUT...``.

Examples:
    python -m kperceptual.stylize --model=starry_night photo.jpg holiday/ --output=stylised/
    python -m kperceptual.stylize --model=runs/starry_night/starry_night.keras photo.jpg

``--model`` is a name under ``savedmodels/`` (its newest version), a SavedModel folder or a
``.keras`` file. Inputs are image files or folders (recursive). Each output is written to
``OUTPUT/<input stem>_<model name>.png``; existing files are never replaced without
``--overwrite``. A file that cannot be read gets one line naming it and the others go on; the
exit status is then 1.
"""

from __future__ import annotations

import os
import sys

from kperceptual import cli  # noqa: F401  (quietens TensorFlow before it is imported)

import numpy as np
from absl import app, flags

from kperceptual import images
from kperceptual.models import load_model

PROGRAM = "kperceptual.stylize"
flags.DEFINE_string("model", None, "A name in --models_dir, a SavedModel folder or a .keras file.")
flags.DEFINE_string("models_dir", "savedmodels", "Where model names are looked up.")
flags.DEFINE_string("output", "stylised", "Output folder.")
flags.DEFINE_integer("max_size", 0, "If > 0, resize inputs so their longer side is at most this.")
flags.DEFINE_bool("overwrite", False, "Replace existing output files.")
FLAGS = flags.FLAGS


def stylize_image(model_fn, image: np.ndarray, max_size: int = 0) -> np.ndarray:
    """Runs the network on one RGB uint8 image; returns RGB uint8 of the (resized) input size."""
    if max_size and max(image.shape[:2]) > max_size:
        image = images.resize_long_side(image, max_size)
    return images.to_uint8(model_fn(image[None].astype(np.float32))[0])


def expand_inputs(inputs) -> list[str]:
    found = []
    for item in inputs:
        found.extend(images.list_images(item) if os.path.isdir(item) else [item])
    return found


def main(argv):
    inputs = expand_inputs(argv[1:])
    if not FLAGS.model:
        cli.fail(PROGRAM, "--model: required")
    if not inputs:
        cli.fail(PROGRAM, "no input images given (files or folders after the flags)")
    if FLAGS.max_size < 0:
        cli.fail(PROGRAM, f"--max_size: must not be negative, got {FLAGS.max_size}")
    try:
        name, model_fn = load_model(FLAGS.model, FLAGS.models_dir)
    except (FileNotFoundError, ValueError, OSError) as e:
        cli.fail(PROGRAM, f"--model: {e}")
    failed = 0
    for path in inputs:
        target = os.path.join(FLAGS.output,
                              f"{os.path.splitext(os.path.basename(path))[0]}_{name}.png")
        try:
            if os.path.exists(target) and not FLAGS.overwrite:
                raise images.ImageError(f"{target}: already exists (pass --overwrite)")
            output = stylize_image(model_fn, images.read_image(path), FLAGS.max_size)
            images.write_image(target, output, overwrite=FLAGS.overwrite)
            print(f"{path} -> {target}")
        except images.ImageError as e:
            print(f"{PROGRAM}: {e}", file=sys.stderr)
            failed += 1
    if failed:
        print(f"{PROGRAM}: {failed} of {len(inputs)} inputs failed", file=sys.stderr)
        sys.exit(1)


if __name__ == "__main__":
    app.run(main, flags_parser=cli.flags_parser(PROGRAM))
