"""Export a trained network: ``python -m kperceptual.export --model=M [--format=...]``.

Examples:
    python -m kperceptual.export --model=runs/starry_night/starry_night.keras
    python -m kperceptual.export --model=starry_night --format=tflite --quantize=float16
    python -m kperceptual.export --model=starry_night --format=tflite --quantize=int8 \\
        --calibration_data=my_photos/ --input_size=512
    python -m kperceptual.export --model=starry_night --format=onnx

``--format=saved_model`` writes ``EXPORT_DIR/<name>/<version>/`` (the next version unless
``--version``; an existing one is never replaced) and adds the model to
``EXPORT_DIR/models.config`` for TF Serving. ``--format=tflite`` writes
``EXPORT_DIR/<name>_<quantize>[_<input_size>].tflite``, replacing nothing without
``--overwrite``. ``--format=onnx`` writes ``EXPORT_DIR/<name>.onnx`` (any input size, for
onnxruntime; docs/onnx.md), likewise never replacing a file without ``--overwrite``. Every bad
flag gets one line naming it and exit status 2.

A multi-style network exports with the style as an input (SavedModel: ``style_weights`` and
``serving_style_index``; TFLite: ``style_weights``). ``--style=NAME`` or a mix
(``--style=starry_night:0.7,wave:0.3``) fixes it instead: the export is the one-style network of
that style (needed for int8 and int16x8 TFLite).
"""

from __future__ import annotations

import os
import time
import zipfile

from absl import app, flags, logging

from kperceptual import cli
from kperceptual.imaging import files
from kperceptual.imaging import images
from kperceptual.choices import INFERENCE_PRECISIONS, SKIMAGE_SOURCE
from kperceptual.serving import tf_onnx as onnx
from kperceptual.serving.layout import name_problem
from kperceptual.serving import tf_saved_model as saved_model
from kperceptual.serving import tf_tflite as tflite
from kperceptual.serving.layout import user_models_dir

PROGRAM = "kperceptual.export"
FORMATS = ("saved_model", "tflite", "onnx")
MIN_INPUT_SIZE = 8
# Names go into paths and into models.config's text proto: no separators, quotes or spaces.

flags.DEFINE_string("model", None, "A model name in --models_dir (its newest version), a "
                    "SavedModel folder written by kperceptual, or a .keras file.")
flags.DEFINE_string("models_dir", user_models_dir(), "Where model names are looked up.")
flags.DEFINE_string("export_dir", user_models_dir(), "Where exports are written.")
flags.DEFINE_string("name", "", "Exported model name (letters, digits, _ . -, not starting "
                    "with .); default: the model's name.")
flags.DEFINE_string("format", "saved_model", f"One of {', '.join(FORMATS)}.")
flags.DEFINE_integer("version", 0, "saved_model: version number; 0: one above the newest.")
flags.DEFINE_string("serving_base_path", "/models",
                    "saved_model: the folder holding the model folders as TF Serving sees it "
                    "(the models.config entry's base_path is this + /NAME).")
flags.DEFINE_integer("max_pixels", saved_model.DEFAULT_MAX_PIXELS,
                     "saved_model: the most pixels (height x width) one image may have; "
                     "serving_bytes reads it from the image's header before decoding, and "
                     "refuses larger ones in its response.")
flags.DEFINE_integer("max_batch_pixels", 0, "saved_model: the most pixels one request may hold "
                     f"in all; 0: {saved_model.BATCH_IMAGES} x --max_pixels.")
flags.DEFINE_string("quantize", "none", f"tflite: one of {', '.join(tflite.QUANTIZATIONS)}.")
flags.DEFINE_integer("input_size", 0, "tflite: 0 for any height and width (batch 1); N for a "
                     "fixed 1xNxNx3 input.")
flags.DEFINE_string("calibration_data", SKIMAGE_SOURCE,
                    "tflite int8/int16x8: a folder of photos (recommended: a few dozen of "
                    "your own, like those the model will see), or skimage: only the 5 "
                    "scikit-image training photos, so the steps are random crops and flips of "
                    "5 images.")
flags.DEFINE_integer("calibration_steps", 32, "tflite int8/int16x8: calibration crops (a "
                     "random crop and flip of the next photo each; photos repeat after the "
                     "last).")
flags.DEFINE_integer("calibration_size", 256, "tflite int8/int16x8: side of the square "
                     "calibration crops when --input_size is 0.")
flags.DEFINE_bool("overwrite", False, "tflite, onnx: replace an existing file.")
flags.DEFINE_string("style", "", "Multi-style networks: export fixed to this style or mix "
                    "(NAME, or NAME:WEIGHT,... e.g. starry_night:0.7,wave:0.3); default: the "
                    "style is an input of the export.")
flags.DEFINE_enum("precision", "float32", list(INFERENCE_PRECISIONS),
                  "saved_model: the arithmetic of the exported network: float32, bfloat16, "
                  "float16, or auto (bfloat16 where this machine computes it natively); the "
                  "signatures take and give the same pixels. tflite: use --quantize=float16; "
                  "onnx: float32.")
FLAGS = flags.FLAGS


def _megabytes(path: str) -> float:
    if os.path.isfile(path):
        return os.path.getsize(path) / 1e6
    return sum(os.path.getsize(os.path.join(root, f))
               for root, _, files in os.walk(path) for f in files) / 1e6


def check_flags():
    """Fails with one line for any flag that cannot work, before anything is loaded."""
    if not FLAGS.model:
        cli.fail(PROGRAM, "--model: required (a model name, SavedModel folder or .keras file)")
    if FLAGS.model.endswith(".tflite"):
        cli.fail(PROGRAM, f"--model: {FLAGS.model}: a .tflite file cannot be re-exported; "
                 "export from the .keras file or a SavedModel")
    choices = {"format": FORMATS, "quantize": tflite.QUANTIZATIONS}
    for flag, allowed in choices.items():
        if FLAGS[flag].value not in allowed:
            cli.fail(PROGRAM, f"--{flag}: {FLAGS[flag].value!r} is not one of "
                     f"{', '.join(allowed)}")
    if FLAGS.precision != "float32" and FLAGS.format != "saved_model":
        cli.fail(PROGRAM, f"--precision: {FLAGS.precision} is for --format=saved_model"
                 + (" (for TFLite use --quantize=float16)" if FLAGS.format == "tflite" else ""))
    if FLAGS.max_pixels < 1:
        cli.fail(PROGRAM, f"--max_pixels: must be positive, got {FLAGS.max_pixels}")
    if FLAGS.max_batch_pixels and FLAGS.max_batch_pixels < FLAGS.max_pixels:
        cli.fail(PROGRAM, f"--max_batch_pixels: must be 0 or at least --max_pixels "
                 f"({FLAGS.max_pixels}), got {FLAGS.max_batch_pixels}")
    if FLAGS.version < 0:
        cli.fail(PROGRAM, f"--version: must be 0 (next) or positive, got {FLAGS.version}")
    if FLAGS.input_size != 0 and FLAGS.input_size < MIN_INPUT_SIZE:
        cli.fail(PROGRAM, f"--input_size: must be 0 (any size) or at least {MIN_INPUT_SIZE}, "
                 f"got {FLAGS.input_size}")
    if FLAGS.calibration_steps < 1:
        cli.fail(PROGRAM, f"--calibration_steps: must be positive, got {FLAGS.calibration_steps}")
    if FLAGS.calibration_size < MIN_INPUT_SIZE:
        cli.fail(PROGRAM, f"--calibration_size: must be at least {MIN_INPUT_SIZE}, got "
                 f"{FLAGS.calibration_size}")
    calibrated = FLAGS.format == "tflite" and FLAGS.quantize in tflite.CALIBRATED
    if calibrated and FLAGS.calibration_data != SKIMAGE_SOURCE:
        if not os.path.isdir(FLAGS.calibration_data):
            cli.fail(PROGRAM, f"--calibration_data: {FLAGS.calibration_data}: no such folder "
                     f"(or {SKIMAGE_SOURCE} for the bundled photos)")
        if not images.list_images(FLAGS.calibration_data):
            cli.fail(PROGRAM, f"--calibration_data: {FLAGS.calibration_data}: no images found")
    if FLAGS.name and name_problem(FLAGS.name):
        cli.fail(PROGRAM, f"--name: {name_problem(FLAGS.name)}")
    if (FLAGS.model.endswith(".keras") and os.path.isfile(FLAGS.model)
            and not zipfile.is_zipfile(FLAGS.model)):
        cli.fail(PROGRAM, f"--model: {FLAGS.model}: not a Keras archive (a .keras file is a "
                 "zip archive)")


def _one_line(error: Exception) -> str:
    """``error``'s message, first line only, prefixed with --model's value unless it names it."""
    text = str(error.args[0]) if isinstance(error, KeyError) and error.args else str(error)
    text = (text.strip().splitlines() or [type(error).__name__])[0]
    return text if FLAGS.model in text else f"{FLAGS.model}: cannot load ({text})"


def load_network():
    from kperceptual.inference.loading import load_model

    try:
        loaded = load_model(FLAGS.model, FLAGS.models_dir)
    except (ValueError, OSError, KeyError, ImportError, zipfile.BadZipFile) as e:
        cli.fail(PROGRAM, f"--model: {_one_line(e)}")
    if loaded.network is None:
        cli.fail(PROGRAM, f"--model: {loaded.path} has no Keras network "
                 f"(assets/network.keras; SavedModels exported before it was added); export "
                 f"from the .keras file instead")
    name = FLAGS.name or loaded.name
    if name_problem(name):
        cli.fail(PROGRAM, f"--name: the model's own name {name_problem(name)}; pass --name")
    network = loaded.network
    from kperceptual import networks

    if FLAGS.style:
        if networks.num_styles(network) == 1:
            cli.fail(PROGRAM, f"--style: {FLAGS.model} has one style; it takes no --style")
        try:
            weights = networks.style_weights(networks.style_names(network), FLAGS.style)
        except ValueError as e:
            cli.fail(PROGRAM, f"--style: {e}")
        network = networks.bind_style(network, weights, name=network.name)
    elif (networks.num_styles(network) > 1 and FLAGS.format == "tflite"
          and FLAGS.quantize in tflite.CALIBRATED):
        cli.fail(PROGRAM, f"--quantize: {FLAGS.quantize} needs one style fixed; pass --style "
                          f"(one of {', '.join(networks.style_names(network))})")
    return name, network


def export_saved_model(name, network):
    version = FLAGS.version or None
    target = os.path.join(FLAGS.export_dir, name, str(version))
    if version is not None and os.path.exists(target):
        cli.fail(PROGRAM, f"--version: {target} already exists; versions are never replaced")
    path = saved_model.export_saved_model(network, FLAGS.export_dir, name, version,
                                          max_pixels=FLAGS.max_pixels,
                                          max_batch_pixels=FLAGS.max_batch_pixels or None)
    print(f"wrote {path} ({_megabytes(path):.1f} MB)")
    base_path = f"{FLAGS.serving_base_path.rstrip('/')}/{name}"
    try:
        config_path, added = saved_model.update_models_config(FLAGS.export_dir, name, base_path)
    except ValueError as e:
        cli.fail(PROGRAM, str(e), status=1)
    print(f"{config_path}: {'added' if added else 'already lists'} {name}")


def export_tflite(name, network):
    path = os.path.join(FLAGS.export_dir,
                        tflite.tflite_filename(name, FLAGS.quantize, FLAGS.input_size))
    if os.path.exists(path) and not FLAGS.overwrite:
        cli.fail(PROGRAM, f"{path}: already exists (pass --overwrite to replace it)")
    calibration = None
    if FLAGS.quantize in tflite.CALIBRATED:
        calibration = tflite.calibration_batches(FLAGS.calibration_data, FLAGS.calibration_steps,
                                                 FLAGS.input_size or FLAGS.calibration_size)
    started = time.perf_counter()
    content = tflite.convert_tflite(network, FLAGS.quantize, FLAGS.input_size, calibration)
    seconds = time.perf_counter() - started
    files.write_atomically(path, content, overwrite=FLAGS.overwrite)
    print(f"wrote {path} ({_megabytes(path):.1f} MB, converted in {seconds:.1f} s)")


def export_onnx(name, network):
    path = os.path.join(FLAGS.export_dir, onnx.onnx_filename(name))
    if os.path.exists(path) and not FLAGS.overwrite:
        cli.fail(PROGRAM, f"{path}: already exists (pass --overwrite to replace it)")
    try:
        content = onnx.convert_onnx(network)
    except ImportError as e:
        cli.fail(PROGRAM, f"--format: onnx needs tf2onnx and onnx ({e}); "
                          'pip install -e ".[onnx]"', status=1)
    files.write_atomically(path, content, overwrite=FLAGS.overwrite)
    print(f"wrote {path} ({_megabytes(path):.1f} MB)")


def main(argv):
    if len(argv) > 1:
        cli.fail(PROGRAM, f"unexpected arguments {' '.join(argv[1:])}; use --flags")
    check_flags()
    logging.set_verbosity(logging.WARNING)  # not TensorFlow's SavedModel chatter
    name, network = load_network()
    try:
        if FLAGS.format == "saved_model":
            from kperceptual import networks
            from kperceptual.inference.stylizer import resolve_inference_precision

            precision = resolve_inference_precision(FLAGS.precision)
            if precision != "float32":
                print(f"precision: {precision}")
            export_saved_model(name, networks.with_precision(network, precision))
        elif FLAGS.format == "onnx":
            export_onnx(name, network)
        else:
            export_tflite(name, network)
    except FileExistsError as e:  # another export took the version or the file meanwhile
        cli.fail(PROGRAM, str(e))
    except OSError as e:  # e.g. a full disk; nothing half-written is left
        cli.fail(PROGRAM, f"{FLAGS.export_dir}: cannot write ({e.strerror or e}); nothing was "
                 "written", status=1)


if __name__ == "__main__":
    app.run(main, flags_parser=cli.flags_parser(PROGRAM))
