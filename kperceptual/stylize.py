"""Apply a trained network to images and videos:
``python -m kperceptual.stylize --model=M INPUT...``.

Examples:
    python -m kperceptual.stylize --model=starry_night photo.jpg holiday/ --output=stylised/
    python -m kperceptual.stylize --model=runs/starry_night/starry_night.keras "shots/**/*.png"
    python -m kperceptual.stylize --model=starry_night big.jpg --memory_budget=4G
    python -m kperceptual.stylize --model=starry_night clip.mov --batch_size=8 --noprogress
    python -m kperceptual.stylize --model=zoo --style=wave photo.jpg
    python -m kperceptual.stylize --model=zoo --style=starry_night:0.7,wave:0.3 photo.jpg
    python -m kperceptual.stylize --model=zoo --style=all photo.jpg

A multi-style network needs ``--style``: a style name, a weighted mix of its styles (weights
normalised to sum 1) or ``all`` (images: every style, in one batch where it fits); outputs are
``OUTPUT/<stem>_<model>_<style>.png`` (a mix: ``..._starry_night0.7-wave0.3.png``). An unknown
name gets one line listing the network's styles; ``--style`` on a one-style network is refused.

``--model`` is a name under ``--models_dir`` (its newest version), a SavedModel folder, a
``.keras`` file or a ``.tflite`` file. Inputs are image files, folders (searched recursively),
glob patterns (quote them; ``**`` matches sub-folders) and videos (.mp4 .mov .webm .mkv .avi).
An image becomes ``OUTPUT/<stem>_<model>.png`` (RGBA where the input has alpha), a video
``OUTPUT/<stem>_<model>.mp4`` at the source's frame rate with the source's first audio track
(as AAC). A video is decoded, stylised ``--batch_size`` frames per network call and encoded at
once (a reader and a writer thread beside the network), with a progress bar on stderr (frames,
frames per second, time left; plain lines every 10 s where stderr is not a terminal;
``--noprogress``: none). Files found in a folder or by a glob keep their sub-folder below it
under ``OUTPUT``. ``--output`` may instead name the file for a single input (an image extension
such as ``out.jpg``, where a format without alpha drops the input's, or ``.mp4`` for a video;
not with ``--style=all``); a name with such an extension that is an existing folder stays a
folder.

Nothing existing is replaced without ``--overwrite``, and an input never is; two inputs with the
same output in one run: the second is refused. A file reached twice (a folder and a file in it,
overlapping globs) runs once; a name that exists is taken literally even with ``[*?`` in it; files
under ``--output`` are skipped when searching folders and globs (the outputs of an earlier run). A file that cannot be read gets one line naming
it and the others go on; the exit status is then 1. Bad flags: one line, exit status 2.

Images with a side under 16 pixels are padded to 16 for the network and cropped back. A
fixed-size ``.tflite`` model takes only images of its size (others get one line each).
``--tile`` needs the Keras network (a ``.keras`` file, or a SavedModel with
``assets/network.keras``); window by window it must exceed the windows' overlap, layer by layer
it must be at least 32. Large images are tiled when the
whole would exceed ``--memory_budget``: layer by layer for networks with instance normalisation
(``kperceptual.inference.layerwise``: about one pass's arithmetic, activations in temporary files as the
budget needs), else in windows (``kperceptual.inference.tiling``); both exact. The library is
``kperceptual.inference`` and ``kperceptual.inference.video``.
"""

from __future__ import annotations

import os
import sys

from kperceptual import cli  # noqa: F401  (quietens TensorFlow before it is imported)

import numpy as np
from absl import app, flags

from kperceptual import choices
from kperceptual.imaging import images
from kperceptual.inference import stylizer as inference
from kperceptual.inference import video
from kperceptual.inference.inputs import expand_inputs, output_path
from kperceptual.serving.layout import user_models_dir

PROGRAM = "kperceptual.stylize"
flags.DEFINE_string("model", None, "A name in --models_dir, a SavedModel folder, a .keras or a "
                                   ".tflite file.")
flags.DEFINE_string("models_dir", user_models_dir(), "Where model names are looked up.")
flags.DEFINE_string("output", "stylised", "Output folder; or, for a single input, the output "
                    "file (an image extension such as out.jpg, or .mp4 for a video).")
flags.DEFINE_integer("max_size", 0, "If > 0, resize inputs so their longer side is at most this.")
flags.DEFINE_integer("tile", 0, "Window side in pixels for tiled runs; 0: automatic (tiles only "
                                "when the whole image would exceed --memory_budget).")
flags.DEFINE_integer("tile_overlap", -1, "Overlap of neighbouring windows in pixels; -1: "
                                         "automatic (twice the receptive-field halo + 16).")
flags.DEFINE_string("memory_budget", "auto", "Peak memory to stay within, e.g. 4G or 512M; "
                                             "auto: 80% of the available memory.")
flags.DEFINE_bool("preserve_color", False, "Keep the input's colours; transfer luminance only.")
flags.DEFINE_float("strength", 1.0, "1: fully stylised; 0: the input; between: a blend.")
flags.DEFINE_enum("histogram_match", "auto", list(choices.HISTOGRAM_MATCH),
                  "Super-resolution: match each output channel's histogram to the input's (the "
                  "paper's post-processing); auto: on for models trained with l_feat.")
flags.DEFINE_integer("batch_size", 4, "Video frames per network call (fewer where a batch "
                                     "would exceed --memory_budget).")
flags.DEFINE_bool("progress", True, "Show a progress bar for videos on stderr (frames, frames/s, "
                                    "time left); --noprogress: none.")
flags.DEFINE_bool("overwrite", False, "Replace existing output files (never an input).")
flags.DEFINE_enum("precision", "auto", list(choices.INFERENCE_PRECISIONS),
                  "auto (bfloat16 where the CPU or GPU computes it natively, else float32), "
                  "float32, bfloat16 or float16; half precision needs the Keras network (a "
                  ".keras file or a kperceptual SavedModel).")
flags.DEFINE_string("margin", "auto", "Pixels of reflection added on every side of the input "
                    "and cropped from the output; auto: 32 for style networks (they paint a band "
                    "along their input's borders), 0 for super-resolution.")
flags.DEFINE_string("style", "", "Multi-style networks: a style name, a mix NAME:WEIGHT,... "
                                 "(e.g. starry_night:0.7,wave:0.3), or all (images only).")
FLAGS = flags.FLAGS

def _check_flags(inputs):
    if not FLAGS.model:
        cli.fail(PROGRAM, "--model: required")
    if not inputs:
        cli.fail(PROGRAM, "no inputs: give image files, folders, globs or videos after the flags")
    try:
        inference.check_options(FLAGS.max_size, FLAGS.tile, FLAGS.tile_overlap, FLAGS.strength,
                                FLAGS.batch_size)
        if FLAGS.memory_budget != "auto":
            inference.parse_memory_size(FLAGS.memory_budget)
    except inference.OptionError as e:
        cli.fail(PROGRAM, str(e))


ALL_STYLES = "all"
FILE_EXTENSIONS = images.IMAGE_EXTENSIONS + video.VIDEO_EXTENSIONS


def _output_file(inputs, errors) -> str | None:
    """``--output`` when it names a file (an image or video extension; not an existing
    folder): valid for one input of the same kind (videos are written as .mp4); None when it
    names a folder."""
    output = FLAGS.output
    if os.path.isdir(output) or not output.lower().endswith(FILE_EXTENSIONS):
        return None
    if video.is_video(output) and not output.lower().endswith(".mp4"):
        cli.fail(PROGRAM, f"--output: {output}: videos are written as .mp4")
    given = len(inputs) + len(errors)
    if given != 1:
        cli.fail(PROGRAM, f"--output: {output} names one file, but the inputs hold {given} "
                          "(folders and globs count their files); name a folder for several")
    if FLAGS.style == ALL_STYLES:
        cli.fail(PROGRAM, f"--output: {output} names one file, but --style=all writes one per "
                          "style; name a folder")
    if inputs and video.is_video(inputs[0][0]) != video.is_video(output):
        kind = ("a video, whose output ends in .mp4" if video.is_video(inputs[0][0]) else
                "an image, whose output needs an image extension "
                f"({' '.join(images.IMAGE_EXTENSIONS)})")
        cli.fail(PROGRAM, f"--output: {output}: {inputs[0][0]} is {kind}")
    return output


def _stylizer() -> inference.Stylizer:
    try:
        model = inference.as_loaded_model(FLAGS.model, FLAGS.models_dir)
    except (FileNotFoundError, ValueError, OSError, ImportError) as e:
        cli.fail(PROGRAM, f"--model: {e}")
    print(f"model: {model.describe()}")  # which one a name found, and its version
    style = FLAGS.style or None
    if style == ALL_STYLES:
        names = inference.model_style_names(model)
        if not names:
            cli.fail(PROGRAM, f"--style: {model.path or model.name} has one style; --style is "
                              "for multi-style networks")
        style = 0
    try:
        return inference.Stylizer(
            model, max_size=FLAGS.max_size, tile=FLAGS.tile, tile_overlap=FLAGS.tile_overlap,
            memory_budget=None if FLAGS.memory_budget == "auto" else FLAGS.memory_budget,
            preserve_color=FLAGS.preserve_color, strength=FLAGS.strength,
            histogram_match=FLAGS.histogram_match, style=style, precision=FLAGS.precision,
            margin=FLAGS.margin, warn=lambda line: print(f"{PROGRAM}: --{line}", file=sys.stderr))
    except inference.OptionError as e:
        cli.fail(PROGRAM, str(e))


def _stylize_all_styles(stylizer, path: str, relative: str, sources) -> list[str]:
    """Every style of the network for the image ``path``; returns the files written."""
    if video.is_video(path):
        raise images.ImageError(f"{path}: --style=all takes images; give a video one --style")
    model = stylizer.source_model.name
    targets = {name: output_path(FLAGS.output, relative, f"{model}_{name}")
               for name in inference.model_style_names(stylizer.source_model)}
    for target in targets.values():
        if os.path.realpath(target) in sources:
            raise images.ImageError(f"{path}: its output {target} is an input; not replaced")
        if os.path.exists(target) and not FLAGS.overwrite:
            raise images.ImageError(f"{target}: already exists (pass --overwrite)")
    rgb, alpha = images.read_image_and_alpha(path)
    try:
        outputs = stylizer.all_styles(rgb if alpha is None else np.dstack([rgb, alpha]))
    except (inference.MemoryBudgetError, inference.InputError) as e:
        raise images.ImageError(f"{path}: {e}") from None
    for name, target in targets.items():
        images.write_image(target, outputs[name], overwrite=FLAGS.overwrite)
    return list(targets.values())


def _stylize_one(stylizer, path: str, target: str):
    if video.is_video(path):
        video.stylize_video(stylizer, path, target, batch_size=FLAGS.batch_size,
                            overwrite=FLAGS.overwrite, progress=FLAGS.progress)
        return
    rgb, alpha = images.read_image_and_alpha(path)
    try:
        output = stylizer.image(rgb if alpha is None else np.dstack([rgb, alpha]))
    except (inference.MemoryBudgetError, inference.InputError) as e:
        raise images.ImageError(f"{path}: {e}") from None
    if alpha is not None and target.lower().endswith(images.NO_ALPHA_EXTENSIONS):
        print(f"{PROGRAM}: --output: {target} holds no alpha; {path}'s is dropped",
              file=sys.stderr)
    images.write_image(target, output, overwrite=FLAGS.overwrite)


def main(argv):
    inputs, errors = expand_inputs(argv[1:], FLAGS.output)
    _check_flags(inputs or errors)
    output_file = _output_file(inputs, errors)
    stylizer = _stylizer()
    for line in errors:
        print(f"{PROGRAM}: {line}", file=sys.stderr)
    sources = {os.path.realpath(path) for path, _ in inputs}
    claimed = {}
    failed = len(errors)
    for path, relative in inputs:
        if FLAGS.style == ALL_STYLES:
            try:
                written = _stylize_all_styles(stylizer, path, relative, sources)
                print(f"{path} -> {', '.join(written)}")
            except images.ImageError as e:
                print(f"{PROGRAM}: {e}", file=sys.stderr)
                failed += 1
            continue
        target = output_file or output_path(FLAGS.output, relative, stylizer.model.name)
        key = os.path.realpath(target)
        try:
            if key in sources:
                raise images.ImageError(f"{path}: its output {target} is an input; not replaced")
            if key in claimed:
                raise images.ImageError(f"{path}: its output {target} is also the output of "
                                        f"{claimed[key]} in this run; skipped")
            claimed[key] = path
            if os.path.exists(target) and not FLAGS.overwrite:
                raise images.ImageError(f"{target}: already exists (pass --overwrite)")
            _stylize_one(stylizer, path, target)
            plan = None if video.is_video(path) else stylizer.last_plan
            if plan is None:
                tiled = ""
            elif hasattr(plan, "describe"):  # layer by layer
                tiled = f" ({plan.describe()})"
            else:
                tiled = (f" ({len(plan.windows)} windows of {plan.rows.size}x{plan.cols.size}, "
                         f"{len(stylizer.tiler.geometry.global_norms) + 1} passes)")
            print(f"{path} -> {target}{tiled}")
        except images.ImageError as e:
            print(f"{PROGRAM}: {e}", file=sys.stderr)
            failed += 1
    if failed:
        print(f"{PROGRAM}: {failed} of {len(inputs) + len(errors)} inputs failed",
              file=sys.stderr)
        sys.exit(1)


if __name__ == "__main__":
    app.run(main, flags_parser=cli.flags_parser(PROGRAM))
