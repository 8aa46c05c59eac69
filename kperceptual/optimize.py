"""Stylise one image by optimisation (Gatys et al.): ``python -m kperceptual.optimize``.

Examples:
    python -m kperceptual.optimize --content=photo.jpg --style=starry_night.jpg --output=out.png
    python -m kperceptual.optimize --content=photo.jpg --style=wave.jpg --output=out.png \
        --iterations=300 --image_size=1024 --init=content --preserve_color --save_every=50

    # Refine a style network's output: its objective falls to Gatys's after 100 iterations from
    # noise in about a third of them (docs/gatys.md).
    python -m kperceptual.stylize --model=starry_night --max_size=512 photo.jpg
    python -m kperceptual.optimize --content=photo.jpg --style=starry_night.jpg --output=out.png \
        --style_size=256 --init=image --init_image=stylised/photo_starry_night.png --iterations=35

Minimises the same content + style + TV objective as training (same flags, same defaults) over
the output's pixels, with bounded L-BFGS (``--optimizer=lbfgs``, pixels kept in [0, 255]), the
paper's clipped L-BFGS (``--optimizer=lbfgs_clipped``) or Adam.
Slow (seconds per iteration on a CPU) but needs no trained network. Every flag and both images
are checked before work starts; a bad one gets one line naming it and exit status 2. This is a
thin layer over ``kperceptual.gatys.stylize``.
"""

from __future__ import annotations


from kperceptual import cli

from absl import app, flags

from kperceptual import config as config_lib
from kperceptual.imaging import images
from kperceptual.losses import vgg16_weights as weights

PROGRAM = "kperceptual.optimize"
_D = config_lib.GatysConfig.__dataclass_fields__

flags.DEFINE_string("content", None, "Content image file (or skimage:NAME).")
flags.DEFINE_string("style", None, "Style image file (or skimage:NAME).")
flags.DEFINE_string("output", None, "Output image file (.png, .jpg, ...).")
flags.DEFINE_integer("image_size", _D["image_size"].default,
                     "Resize the content so its longer side is this; 0 keeps its size.")
flags.DEFINE_integer("style_size", _D["style_size"].default,
                     "Resize the style image so its longer side is this; 0: the content's.")
flags.DEFINE_string("optimizer", _D["optimizer"].default,
                    "lbfgs (L-BFGS-B, pixels bounded to [0, 255], with a line search), "
                    "lbfgs_clipped (the paper's baseline: L-BFGS with unit steps, the image "
                    "clipped to [0, 255] after each; Torch's 100 pairs with --lbfgs_memory=100) "
                    "or adam.")
flags.DEFINE_integer("iterations", _D["iterations"].default, "Optimiser iterations (paper: "
                                                             "100 to 500).")
flags.DEFINE_string("init", _D["init"].default,
                    "Start from noise (white noise, the paper), content (the content image) or "
                    "image (--init_image).")
flags.DEFINE_string("init_image", _D["init_image"].default,
                    "With --init=image: the image to start from, e.g. a style network's output "
                    "of the same content, so the iterations refine it (resized to the "
                    "content's size if its aspect ratio is within 2%).")
flags.DEFINE_integer("seed", _D["seed"].default, "Seed of the white noise.")
flags.DEFINE_float("learning_rate", _D["learning_rate"].default,
                   "Adam's learning rate, in pixel values (--optimizer=adam only).")
flags.DEFINE_integer("lbfgs_memory", _D["lbfgs_memory"].default,
                     "Correction pairs L-BFGS keeps (memory: 2 x this x image pixels x 3 x 8 "
                     "bytes).")
flags.DEFINE_bool("preserve_color", False,
                  "Transfer luminance only and keep the content's colours.")
flags.DEFINE_integer("save_every", 0, "If > 0, also write the image every N iterations, as "
                                      "OUTPUT_STEM_<iteration>.EXT.")
flags.DEFINE_bool("overwrite", False, "Replace existing output files.")
flags.DEFINE_string("precision", _D["precision"].default,
                    "auto (mixed_bfloat16 on hardware with native bf16, else float32; float32 "
                    "with --init=image, where bfloat16 is too coarse for L-BFGS), float32 or "
                    "mixed_bfloat16: the loss network's compute dtype.")
cli.define_objective_flags()
flags.adopt_module_key_flags(cli)  # so --help lists them
FLAGS = flags.FLAGS


def main(argv):
    if len(argv) > 1:
        cli.fail(PROGRAM, f"unexpected arguments {' '.join(argv[1:])}; use --flags")
    for name in ("content", "style", "output"):
        if not FLAGS[name].value:
            cli.fail(PROGRAM, f"--{name}: required")
    config = cli.config_from_flags(config_lib.GatysConfig)
    try:
        content, style, start = config_lib.validate_gatys(config)
    except config_lib.ConfigError as e:
        cli.fail(PROGRAM, str(e))
    snapshots = config.snapshot_paths()

    import keras  # the framework starts only once the flags are good

    from kperceptual.gatys import optimizer as gatys

    progress = keras.utils.Progbar(config.iterations, stateful_metrics=gatys.TERMS)

    def report(iteration, terms, image):
        if iteration:
            progress.update(iteration, [(name, terms[name]) for name in gatys.TERMS])
        if iteration in snapshots:
            images.write_image(snapshots[iteration], image, overwrite=config.overwrite)

    print(f"{config.optimizer}: {config.iterations} iterations on {content.shape[1]}x"
          f"{content.shape[0]} pixels from {config.init_image or config.init}")
    try:
        result = gatys.stylize(
            content, style, image_size=config.image_size, style_size=config.style_size,
            iterations=config.iterations, optimizer=config.optimizer,
            init=config.init, init_image=start, seed=config.seed,
            learning_rate=config.learning_rate,
            lbfgs_memory=config.lbfgs_memory, preserve_color=config.preserve_color,
            precision=config.precision, objective=config, callback=report)
        images.write_image(config.output, result.image, overwrite=config.overwrite)
    except (weights.WeightsError, images.ImageError, OSError) as e:
        cli.fail(PROGRAM, str(e), status=1)
    except MemoryError:
        cli.fail(PROGRAM, "out of memory; use a smaller --image_size or --lbfgs_memory", 1)
    print()  # ends the progress bar's line, also when L-BFGS stopped early
    last = result.history[-1]
    print(f"wrote {config.output}: objective {last['total']:.4g} after {last['iteration']} "
          f"iterations (from {result.history[0]['total']:.4g}; {result.evaluations} "
          f"evaluations, {last['seconds']:.1f} s; style image {result.style_shape[1]}x"
          f"{result.style_shape[0]}); {result.stopped.lower()}")


if __name__ == "__main__":
    app.run(main, flags_parser=cli.flags_parser(PROGRAM))
