"""Evaluate super-resolution models the paper's way:
``python -m kperceptual.evaluate --model=M[,M...] --hr=DIR [--lr=DIR] --scale=N --output=DIR``.

Examples:
    python -m kperceptual.evaluate --model=bicubic --hr=../shared/data/sr/Set5/HR \\
        --lr=../shared/data/sr/Set5/LR_x4 --scale=4 --output=eval/set5_bicubic
    python -m kperceptual.evaluate --model=bicubic,sr_x4_pixel,sr_x4_feat \\
        --hr=../shared/data/sr/Set14/HR --lr=../shared/data/sr/Set14/LR_x4 --scale=4 \\
        --output=eval/set14_x4
    python -m kperceptual.evaluate --model=bicubic,sr_x8_feat --hr=../shared/data/sr/Set5/HR \\
        --scale=8 --output=eval/set5_x8     # low-res inputs made by the paper's degradation

``--model`` lists models (names under ``--models_dir``, ``.keras`` files, SavedModel folders,
``.tflite`` files) and ``bicubic``, the baseline. Each is scored on every high-res image with
PSNR and SSIM on the BT.601 luma with ``--scale`` pixels cropped from each border (the
convention that reproduces the paper's bicubic x4 Set5 numbers), and LPIPS (VGG, v0.1). Output:
``results.md`` (a table of means and per-image tables), ``results.json`` and ``grid.png``
(a detailed crop of each image: a column per model, then the high-res image), and with
``--save_images`` every output image. Nothing is replaced without ``--overwrite``.
Bad flags and inputs (folders that do not pair up, a low-res image that is not the high-res
size divided by the scale, a model trained for another scale): one line, exit status 2.
The library is ``kperceptual.evaluation.super_resolution``.
"""

from __future__ import annotations

from kperceptual import cli  # noqa: F401  (quietens TensorFlow before it is imported)

import sys

from absl import app, flags

from kperceptual.data import degradation
from kperceptual.choices import HISTOGRAM_MATCH, INFERENCE_PRECISIONS
from kperceptual.serving.layout import user_models_dir

PROGRAM = "kperceptual.evaluate"

flags.DEFINE_list("model", None, "Models to evaluate, comma-separated, in table order; "
                                 "'bicubic' is the baseline.")
flags.DEFINE_string("hr", None, "Folder of high-resolution (ground truth) images.")
flags.DEFINE_string("lr", None, "Folder of matching low-resolution inputs (same file names); "
                                "default: made from --hr with the paper's degradation.")
flags.DEFINE_integer("scale", None, "Upscaling factor, e.g. 4 or 8.")
flags.DEFINE_float("blur_sigma", degradation.BLUR_SIGMA,
                   "Without --lr: the Gaussian blur before bicubic downsampling.")
flags.DEFINE_string("output", None, "Folder for results.md, results.json and grid.png.")
flags.DEFINE_string("title", "", "Heading of the Markdown table; default: the --hr folder's "
                                 "name (its parent's for a folder named HR) and the scale.")
flags.DEFINE_enum("histogram_match", "auto", list(HISTOGRAM_MATCH),
                  "Match each output channel's histogram to the low-res input's (the paper's "
                  "post-processing); auto: on for models trained with l_feat.")
flags.DEFINE_bool("lpips", True, "Also report LPIPS (VGG), which needs the VGG16 weights.")
flags.DEFINE_bool("save_images", False, "Also write every model's output images.")
flags.DEFINE_string("models_dir", user_models_dir(), "Where model names are looked up.")
flags.DEFINE_string("memory_budget", "auto", "Peak memory per image, e.g. 4G; auto: 80% of "
                                             "the available memory.")
flags.DEFINE_bool("overwrite", False, "Replace existing result files.")
flags.DEFINE_enum("precision", "float32", list(INFERENCE_PRECISIONS),
                  "Compute the networks in float32 (default: the published numbers), bfloat16, "
                  "float16, or auto (bfloat16 where the hardware computes it natively).")
FLAGS = flags.FLAGS


def main(argv):
    if len(argv) > 1:
        cli.fail(PROGRAM, f"unexpected arguments {' '.join(argv[1:])}; use --flags")
    for name in ("model", "hr", "scale", "output"):
        if not FLAGS[name].value:
            cli.fail(PROGRAM, f"--{name}: required")
    from kperceptual.evaluation import super_resolution as evaluation
    from kperceptual.losses import vgg16_weights as weights

    title = FLAGS.title or evaluation.default_title(FLAGS.hr, FLAGS.scale)
    try:
        evaluation.check_output(FLAGS.output, FLAGS.overwrite)
        pairs = evaluation.load_pairs(FLAGS.hr, FLAGS.lr, FLAGS.scale, FLAGS.blur_sigma)
        results = evaluation.evaluate(
            FLAGS.model, pairs, FLAGS.scale, use_lpips=FLAGS.lpips,
            histogram_match=FLAGS.histogram_match, models_dir=FLAGS.models_dir,
            memory_budget=None if FLAGS.memory_budget == "auto" else FLAGS.memory_budget,
            progress=lambda line: print(line, file=sys.stderr), precision=FLAGS.precision)
        paths = evaluation.write_report(
            results, pairs, FLAGS.output, scale=FLAGS.scale, title=title,
            overwrite=FLAGS.overwrite, save_images=FLAGS.save_images,
            info={"hr": FLAGS.hr, "lr": FLAGS.lr, "blur_sigma": None if FLAGS.lr else
                  FLAGS.blur_sigma, "histogram_match": FLAGS.histogram_match})
    except evaluation.EvaluationError as e:
        cli.fail(PROGRAM, str(e))
    except weights.WeightsError as e:
        cli.fail(PROGRAM, f"--lpips: {e} (or pass --nolpips)", status=1)
    print(evaluation.markdown_table(results, title, per_image=False), end="")
    for kind, path in paths.items():
        print(f"{kind}: {path}")


if __name__ == "__main__":
    app.run(main, flags_parser=cli.flags_parser(PROGRAM))
