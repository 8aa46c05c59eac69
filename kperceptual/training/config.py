"""What every training job is configured with, whichever task of the paper it trains:
data, steps, optimiser, network options, where to write (``TrainingConfig``), checked in full
before any work starts (``validate``). Each task (``kperceptual.tasks``) subclasses it with its
own settings and checks. Importable without Keras or TensorFlow.
"""

from __future__ import annotations

import dataclasses
import os

from kperceptual import choices
from kperceptual.choices import SKIMAGE_SOURCE, TFDS_PREFIX
from kperceptual.errors import FlagError, check_choice, check_positive
from kperceptual.imaging import images
from kperceptual.losses.config import ObjectiveConfig
from kperceptual.serving.layout import name_problem, user_models_dir


@dataclasses.dataclass(kw_only=True)
class TrainingConfig(ObjectiveConfig):
    """What every training job has: data, steps, optimiser, network options, where to write."""

    train_data: str = SKIMAGE_SOURCE
    name: str = ""
    image_size: int = 256  # the side of the square training images (SR: high-res patches)
    batch_size: int = 4  # global: split over all replicas
    steps: int = 40_000
    learning_rate: float = 1e-3
    lr_schedule: str = "constant"  # constant, cosine or step (see choices.LR_SCHEDULES)
    warmup_steps: int = 0  # linear warm-up from 0 to learning_rate first
    # Score the output and its target cropped by loss_shift pixels at an offset that changes
    # from batch to batch (losses.objective.WithLossShift); 0: the whole output (the paper).
    loss_shift: int = 0
    ema: float = 0.0  # momentum of an exponential moving average of the weights (0: none)
    init_from: str = ""  # a model whose weights start a new run (same architecture)
    norm: str = "instance"
    upsample: str = "resize"
    padding: str = "reflect"
    precision: str = "auto"  # auto: mixed_bfloat16 where the hardware has native bf16
    jit_compile: str = "auto"  # XLA (tensorflow, jax) or torch.compile: auto, on or off
    strategy: str = "auto"  # see choices.STRATEGIES
    loader: str = "auto"  # tf.data where TensorFlow is installed, else keras.utils.PyDataset
    model_dir: str = ""  # defaults to runs/<name>
    export_dir: str = dataclasses.field(default_factory=user_models_dir)  # the user's models
    checkpoint_every: int = 500
    log_every: int = 50
    sample_every: int = 500
    seed: int = 0
    tfds_data_dir: str | None = None

    task = "style"

    # What each task (kperceptual.tasks) defines: its default name, its own checks, and what a
    # training run is made of. Keras is imported inside them, not when the config is.
    def default_name(self) -> str:
        raise NotImplementedError

    def check_task(self) -> None:
        """Raises ``FlagError`` for the first wrong task-specific value."""
        raise NotImplementedError

    def make_network(self, **kwargs):
        """The (untrained) transformation network this config describes."""
        raise NotImplementedError

    def make_source(self):
        """The training data (a ``kperceptual.data.sources.TrainingImages``)."""
        raise NotImplementedError

    def make_objective(self, loss_net=None):
        """The objective the network is trained to minimise."""
        raise NotImplementedError

    def trainer_options(self) -> dict:
        """Keyword arguments of ``PerceptualTrainer`` beyond the network and objective."""
        return {}

    def trained_styles(self) -> tuple[int, ...]:
        """The indices of the styles a run trains (() for a task without styles)."""
        return ()

    def sample_inputs(self) -> list:
        """The network inputs whose outputs the logs show while training."""
        return sample_crops(self.image_size)

    def __post_init__(self):
        super().__post_init__()
        if not self.name:
            self.name = self.default_name()
        if not self.model_dir:
            self.model_dir = os.path.join("runs", self.name)

    def network_config(self) -> dict:
        return {"norm": self.norm, "upsample": self.upsample, "padding": self.padding}

    def to_dict(self) -> dict:
        return {"task": self.task, **super().to_dict()}


# What a run in a model_dir is trained to minimise: resuming it with other values would mix two
# objectives in one network (and config.json would name only the first).
OBJECTIVE_FIELDS = ("style_image", "style_size", "content_weight", "style_weight", "tv_weight",
                    "style_reduction", "content_layers", "style_layers", "vgg_weights",
                    "blur_sigma", "pixel_loss", "chroma_weight", "pixel_weight", "grid_weight",
                    "loss_shift", "stability_weight", "stability_shift", "stability_noise")


# The bundled photos whose outputs the logs show while a network trains.
SAMPLE_PHOTOS = ("astronaut", "chelsea", "coffee")


def sample_crops(size: int) -> list:
    """``SAMPLE_PHOTOS``, each resized and centre-cropped to ``size`` x ``size``."""
    return [images.resize_and_center_crop(images.skimage_photo(n), size) for n in SAMPLE_PHOTOS]


def _check_train_data(config) -> None:
    """Checks the training source without downloading or decoding it."""
    source = config.train_data
    if source == SKIMAGE_SOURCE:
        return
    if source.startswith(TFDS_PREFIX):
        if not source[len(TFDS_PREFIX):].partition(":")[0]:
            raise FlagError("train_data", f"{source}: name a dataset, as in tfds:coco/2017")
        return  # the name is checked by the pipeline, which imports tensorflow-datasets
    if not os.path.isdir(source):
        raise FlagError("train_data", f"{source}: no such folder (write tfds:NAME for a "
                                       "tensorflow-datasets dataset, or skimage for the "
                                       "bundled photos)")
    if not images.list_images(source):
        raise FlagError("train_data", f"{source}: no images "
                                       f"({', '.join(images.IMAGE_EXTENSIONS)}) in this folder "
                                       "or below it")


def _model_exists(spec: str, export_dir: str) -> bool:
    """A path, or a model name in ``export_dir`` or among the shipped models (as
    ``models.load_model`` resolves it)."""
    from kperceptual.inference import loading as models

    if os.path.exists(spec) or os.path.isdir(os.path.join(export_dir, spec)):
        return True
    shipped = models.shipped_models_dir()
    return bool(shipped) and "/" not in spec and os.sep not in spec and os.path.isdir(
        os.path.join(shipped, spec))


def validate(config: TrainingConfig) -> None:
    """Raises ``FlagError`` for the first wrong value; cheap (reads the style images only)."""
    _check_train_data(config)
    check_positive(config, "image_size", "batch_size", "steps", "learning_rate",
                   "checkpoint_every", "log_every", "sample_every")
    if config.image_size < 8:
        raise FlagError("image_size", f"must be at least 8 pixels, got {config.image_size}")
    if config.seed < 0:
        raise FlagError("seed", f"must not be negative, got {config.seed}")
    check_choice(config, "lr_schedule", choices.LR_SCHEDULES)
    if config.warmup_steps < 0 or config.warmup_steps >= config.steps:
        raise FlagError("warmup_steps", f"must be >= 0 and below --steps={config.steps}, got "
                                         f"{config.warmup_steps}")
    if not 0 <= config.loss_shift <= config.image_size // 2:
        raise FlagError("loss_shift", f"must be between 0 and half of --image_size "
                                       f"({config.image_size // 2}), got {config.loss_shift}")
    if not 0 <= config.ema < 1:
        raise FlagError("ema", f"must be in [0, 1) (e.g. 0.999; 0 for none), got {config.ema}")
    if config.init_from and not _model_exists(config.init_from, config.export_dir):
        raise FlagError("init_from", f"{config.init_from}: no such model (a .keras file, a "
                                      f"SavedModel folder, or a model name in "
                                      f"{config.export_dir}/ or among the shipped models)")
    config.check_task()
    check_choice(config, "norm", choices.NORMS)
    check_choice(config, "upsample", choices.UPSAMPLES)
    check_choice(config, "padding", choices.PADDINGS)
    check_choice(config, "precision", choices.PRECISIONS)
    check_choice(config, "jit_compile", choices.JIT_COMPILE)
    check_choice(config, "strategy", choices.STRATEGIES)
    check_choice(config, "loader", choices.LOADERS)
    problem = name_problem(config.name)
    if problem:
        raise FlagError("name", problem)
    for field in ("model_dir", "export_dir"):
        path = getattr(config, field)
        if os.path.exists(path) and not os.path.isdir(path):
            raise FlagError(field, f"{path}: exists and is not a folder")
