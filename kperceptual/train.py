"""Train a transformation network: ``python -m kperceptual.train --flagfile=FILE``.

Examples:
    python -m kperceptual.train --flagfile=pipelines/quickstart.flags
    python -m kperceptual.train --flagfile=pipelines/starry_night.flags
    python -m kperceptual.train --style_image=my_style.jpg --train_data=photos/ --steps=40000
    python -m kperceptual.train --style_image=styles/ --name=zoo          # one network, N styles
    python -m kperceptual.train --init_from=zoo --style_image=new.jpg --name=zoo2   # add a style
    python -m kperceptual.train --flagfile=pipelines/sr_x4_feat.flags --steps=2000
    python -m kperceptual.train --task=super_resolution --scale=8 --loss=pixel --train_data=photos/

``--task=style`` (default) trains a style transformation network for ``--style_image``;
``--task=super_resolution`` trains a x``--scale`` super-resolution network with ``--loss=feat``
(feature reconstruction at relu2_2) or ``--loss=pixel``. Flags whose default differs by task
(``--image_size``, ``--steps``, ``--norm``, ``--tv_weight``) take the task's default unless given.

Run the same command again to resume from the newest checkpoint in --model_dir. Every flag is
checked before work starts; a bad one gets one line naming it and exit status 2.
This is a thin layer over ``kperceptual.training.trainer.train(StyleTrainingConfig(...))`` or
``train(SuperResolutionConfig(...))``.
"""

from __future__ import annotations

from kperceptual import cli  # noqa: F401  (quietens TensorFlow before it is imported)

from absl import app, flags

from kperceptual import config as config_lib
from kperceptual.losses import vgg16_weights as weights
from kperceptual.serving.layout import user_models_dir

PROGRAM = "kperceptual.train"
_D = config_lib.StyleTrainingConfig.__dataclass_fields__
_SR = config_lib.SuperResolutionConfig.__dataclass_fields__
CONFIGS = {"style": config_lib.StyleTrainingConfig,
           "super_resolution": config_lib.SuperResolutionConfig}


def _by_task(field: str) -> str:
    return f"default: {_D[field].default} for style, {_SR[field].default} for super_resolution"


flags.DEFINE_enum("task", "style", list(CONFIGS), "What to train: a style transformation "
                  "network, or a super-resolution network.")
flags.DEFINE_string("style_image", None, "Style image file, or skimage:NAME for a bundled photo; "
                    "several (a comma-separated list or a folder): one multi-style network "
                    "(conditional instance normalisation), each style named by its file stem.")
flags.DEFINE_integer("scale", _SR["scale"].default,
                     "Super-resolution factor, a power of two (the paper: 4 and 8).")
flags.DEFINE_string("loss", _SR["loss"].default,
                    "Super-resolution objective: feat (feature reconstruction at "
                    "--content_layers, paper: relu2_2) or pixel (l_pixel).")
flags.DEFINE_float("blur_sigma", _SR["blur_sigma"].default,
                   "Super-resolution degradation: Gaussian blur before bicubic downsampling.")
flags.DEFINE_string("train_data", _D["train_data"].default,
                    "Training photos: a folder (recursive), tfds:NAME[:SPLIT] "
                    "(e.g. tfds:coco/2017), or skimage for scikit-image's bundled photos.")
flags.DEFINE_string("name", "", "Model name for exports; default: the style image's file stem, "
                              "or sr_x<scale>_<loss> for super-resolution.")
flags.DEFINE_integer("image_size", None, "Side of the square training crops (super-resolution: "
                     f"of the high-res patches); {_by_task('image_size')}.")
flags.DEFINE_string("head", _D["head"].default,
                    "Style network output head: linear (127.5 x + 127.5, clipped with a "
                    "straight-through gradient; nothing saturates) or tanh (the paper's scaled "
                    "tanh, whose saturated regions become black or white blobs).")
flags.DEFINE_list("filters", [str(f) for f in _D["filters"].default],
                  "Style network: filters of the three downsampling convolutions (the "
                  "upsampling ones mirror the first two); the paper's 32,64,128. With "
                  "--init_from a narrower network of the same shape otherwise, it is widened "
                  "with its function kept (new channels start without effect).")
flags.DEFINE_float("stability_weight", _D["stability_weight"].default,
                   "Style: weight of a temporal stability term (0: the paper's objective). Each "
                   "step also runs the network on a window of its inputs moved by up to "
                   "--stability_shift pixels, with --stability_noise, and asks for the same "
                   "output there: less flicker on video.")
flags.DEFINE_integer("stability_shift", _D["stability_shift"].default,
                     "Style: the stability term's largest shift in pixels (each step draws one "
                     "from 0 to this in each direction).")
flags.DEFINE_float("stability_noise", _D["stability_noise"].default,
                   "Style: the stability term's Gaussian sensor noise (pixel levels, std).")
flags.DEFINE_integer("style_size", _D["style_size"].default,
                     "The style image is resized so its longer side is this.")
flags.DEFINE_integer("batch_size", _D["batch_size"].default,
                     "Global batch size, split over all replicas.")
flags.DEFINE_integer("steps", None, f"Total training steps; {_by_task('steps')} (the paper's).")
flags.DEFINE_float("learning_rate", _D["learning_rate"].default,
                   "Adam learning rate (the peak of --lr_schedule).")
flags.DEFINE_string("lr_schedule", _D["lr_schedule"].default,
                    "constant, cosine (half a cosine down to 1% at --steps) or step (/10 at 2/3 "
                    "and again at 8/9 of the steps after warm-up).")
flags.DEFINE_integer("warmup_steps", _D["warmup_steps"].default,
                     "Linear learning-rate warm-up over the first N steps.")
flags.DEFINE_integer("loss_shift", _D["loss_shift"].default,
                     "Score the output and its target cropped by this many pixels, at an "
                     "offset that changes from batch to batch (0: the whole output, the paper). "
                     "Super-resolution --loss=feat: VGG16's pooling grid no longer lines up "
                     "with the upsampling grid (against a lattice texture). Style: the scored "
                     "edges move, so no band along the borders is learned (--image_size is "
                     "the network's input; the loss sees --image_size minus this).")
flags.DEFINE_float("ema", _D["ema"].default,
                   "Momentum of an exponential moving average of the weights, which is what "
                   "the .keras file and the export get (e.g. 0.999; 0: none).")
flags.DEFINE_string("init_from", _D["init_from"].default,
                    "Start a new run from this model's weights (a .keras file, a SavedModel "
                    "folder or a model name; same architecture). A multi-style network with "
                    "only new --style_image styles: adds them, training only their scales and "
                    "shifts. Ignored when resuming.")
flags.DEFINE_bool("tune_styles", _D["tune_styles"].default,
                  "Style: with --init_from a multi-style network and --style_image some of its "
                  "styles, train only those styles' scales and shifts; the network keeps all "
                  "of its styles, and every other weight stays bit-identical. The export's "
                  "default name is the styles' and _tuned (resume with the same command, or "
                  "the same --name).")
flags.DEFINE_string("residual", _SR["residual"].default,
                    "Super-resolution: bicubic (the network corrects the bicubic upsampling of "
                    "its input; untrained, it is bicubic) or none (the paper).")
flags.DEFINE_string("pixel_loss", _SR["pixel_loss"].default,
                    "Super-resolution --loss=pixel distance: l2 (squared error, the paper) or "
                    "l1.")
flags.DEFINE_float("pixel_weight", _SR["pixel_weight"].default,
                   "Super-resolution --loss=feat: weight of l_pixel (--pixel_loss) beside "
                   "l_feat, which anchors the output to the truth's pixels (0: l_feat alone, "
                   "the paper).")
flags.DEFINE_float("grid_weight", _SR["grid_weight"].default,
                   "Super-resolution: weight of a term against the part of the error that "
                   "repeats with the low-res pixel grid (each sub-pixel phase's mean error in "
                   "windows of up to 64 px, squared), the lattice l_feat networks paint (0: "
                   "off, the paper).")
flags.DEFINE_float("chroma_weight", _SR["chroma_weight"].default,
                   "Super-resolution: weight of a colour term (Cb, Cr against the target's, "
                   "pooled by --scale) that keeps greyscale grey and colours where they were.")
cli.define_objective_flags()
flags.adopt_module_key_flags(cli)  # so --help lists them
flags.DEFINE_string("norm", None, f"instance (peers), batch (paper) or none; "
                                  f"{_by_task('norm')}.")
flags.DEFINE_string("upsample", _D["upsample"].default, "resize (nearest + conv) or transpose "
                                                        "(paper).")
flags.DEFINE_string("padding", _D["padding"].default, "reflect or zero.")
flags.DEFINE_string("precision", _D["precision"].default,
                    "auto (mixed_bfloat16 on hardware with native bf16, else float32), float32, "
                    "mixed_bfloat16 or mixed_float16 (with loss scaling). Gram matrices and "
                    "losses are always float32.")
flags.DEFINE_alias("mixed_precision", "precision")
flags.DEFINE_string("jit_compile", _D["jit_compile"].default,
                    "auto (Keras's choice: XLA on jax; off on tensorflow under tf.distribute and "
                    "on torch), on (XLA; torch.compile on torch) or off.")
flags.DEFINE_string("strategy", _D["strategy"].default,
                    "auto, mirrored (tensorflow: all GPUs of this machine), multi_worker "
                    "(tensorflow: MultiWorkerMirroredStrategy, a cluster from TF_CONFIG) or "
                    "data_parallel (jax: keras.distribution.DataParallel over its devices).")
flags.DEFINE_string("loader", _D["loader"].default,
                    "auto (tf.data where TensorFlow is installed), tf_data or py_dataset "
                    "(keras.utils.PyDataset: no TensorFlow needed).")
flags.DEFINE_string("model_dir", "", "Checkpoints, logs and the .keras file; default runs/NAME.")
flags.DEFINE_string("export_dir", user_models_dir(),
                    "SavedModels are written to EXPORT_DIR/NAME/VERSION.")
flags.DEFINE_integer("checkpoint_every", _D["checkpoint_every"].default,
                     "Checkpoint every N steps; an interrupted run loses at most N steps.")
flags.DEFINE_integer("log_every", _D["log_every"].default, "TensorBoard scalars every N steps.")
flags.DEFINE_integer("sample_every", _D["sample_every"].default,
                     "TensorBoard sample images every N steps.")
flags.DEFINE_integer("seed", _D["seed"].default,
                     "Seed for the initial weights and the order of training images.")
flags.DEFINE_string("tfds_data_dir", None, "tensorflow-datasets data folder.")

FLAGS = flags.FLAGS


def config_from_flags():
    """The training config the parsed flags give, checked as ``main`` checks it before training
    (a bad flag: ``cli.fail``'s one line and exit status 2)."""
    config_class = CONFIGS[FLAGS.task]
    if FLAGS.task == "style" and not FLAGS.style_image:
        cli.fail(PROGRAM, "--style_image: required (an image file or skimage:NAME)")
    unused = [name for other in CONFIGS.values() if other is not config_class
              for name in other.TASK_FIELDS if name not in config_class.TASK_FIELDS]
    for name in unused:
        if FLAGS[name].present or not FLAGS[name].using_default_value:
            cli.fail(PROGRAM, f"--{name}: not used by --task={FLAGS.task}")
    config = cli.config_from_flags(config_class)
    try:
        config_lib.validate(config)
    except config_lib.ConfigError as e:
        cli.fail(PROGRAM, str(e))
    return config


def main(argv):
    if len(argv) > 1:
        cli.fail(PROGRAM, f"unexpected arguments {' '.join(argv[1:])}; use --flags")
    config = config_from_flags()
    from kperceptual.training import trainer  # TensorFlow is imported only once the flags are good

    try:
        result = trainer.train(config)
    except config_lib.ConfigError as e:
        cli.fail(PROGRAM, str(e))
    except trainer.TrainingDiverged as e:
        cli.fail(PROGRAM, str(e), status=1)
    except trainer.TrainingInterrupted as e:
        cli.fail(PROGRAM, str(e), status=130)
    except (weights.WeightsError, OSError) as e:
        cli.fail(PROGRAM, str(e), status=1)
    print(f"trained {config.name} to step {result['steps']} ({result['trained_steps']} this run, "
          f"{result['seconds']:.0f} s; {result['distribution']}, {result['precision']}, "
          f"loader {result['loader']})")
    if result["keras_path"]:
        print(f"Keras model: {result['keras_path']}")
        print(f"SavedModel:  {result['export_path'] or 'not written (no TensorFlow)'}")
    else:
        print("not the chief: the chief worker writes the checkpoints, model and export")
    if result["skipped_images"]:
        print(f"skipped {len(result['skipped_images'])} unreadable training images")


if __name__ == "__main__":
    app.run(main, flags_parser=cli.flags_parser(PROGRAM))
