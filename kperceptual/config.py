"""Training configuration: one dataclass, checked in full before any work starts.

Backend-neutral. ``kperceptual.train`` fills a ``StyleTrainingConfig`` from absl flags; Python
users build one directly. ``validate`` raises ``ConfigError`` naming the field (= the flag) and
what is wrong with it.
"""

from __future__ import annotations

import dataclasses
import math
import os

from kperceptual import choices
from kperceptual.imaging import images

TFDS_PREFIX = "tfds:"
SKIMAGE_SOURCE = "skimage"


class ConfigError(ValueError):
    """A configuration value is wrong; ``field`` is the flag that holds it."""

    def __init__(self, field: str, message: str):
        super().__init__(f"--{field}: {message}")
        self.field = field


@dataclasses.dataclass(kw_only=True)
class ObjectiveConfig:
    """The perceptual objective's settings, shared by training and the Gatys optimiser so that
    both minimise the same function with the same defaults."""

    content_weight: float = 1.0
    # The balance of pytorch/examples' fast_neural_style (content 1e5 : style 1e10 with the mean
    # over Gram entries, same torchvision input scaling), divided by 1e5.
    style_weight: float = 1e5
    tv_weight: float = 1e-8
    style_reduction: str = "mean"
    content_layers: tuple = choices.CONTENT_LAYERS
    style_layers: tuple = choices.STYLE_LAYERS
    vgg_weights: str = "torchvision"

    def __post_init__(self):
        self.content_layers = tuple(self.content_layers)
        self.style_layers = tuple(self.style_layers)

    def loss_layers(self) -> tuple:
        """Every VGG16 layer the objective reads, content layers first, each once."""
        return tuple(dict.fromkeys(self.content_layers + self.style_layers))

    def objective_kwargs(self) -> dict:
        """Keyword arguments of ``losses.PerceptualObjective`` besides the networks."""
        return {"content_layers": self.content_layers, "style_layers": self.style_layers,
                "content_weight": self.content_weight, "style_weight": self.style_weight,
                "tv_weight": self.tv_weight, "style_reduction": self.style_reduction}

    def to_dict(self) -> dict:
        d = dataclasses.asdict(self)
        d["content_layers"] = list(self.content_layers)
        d["style_layers"] = list(self.style_layers)
        return d


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
    export_dir: str = "savedmodels"
    checkpoint_every: int = 500
    log_every: int = 50
    sample_every: int = 500
    seed: int = 0
    tfds_data_dir: str | None = None

    task = "style"

    def default_name(self) -> str:
        raise NotImplementedError

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


def _style_stem(path: str) -> str:
    return (path.split(":", 1)[-1] if path.startswith(images.SKIMAGE_PREFIX)
            else os.path.splitext(os.path.basename(path))[0])


@dataclasses.dataclass
class StyleTrainingConfig(TrainingConfig):
    """A style transformation network for one style image (the paper's Section 3), or for
    several (``style_image`` a comma-separated list or a folder): one network with conditional
    instance normalisation (Dumoulin et al. 2017), each style named by its file stem.

    ``inherited_styles`` (not a flag; ``trainer.resolve_init_from`` sets it): the styles of an
    ``init_from`` multi-style network this one adds its styles to; the network has those first,
    then ``style_image``'s, and only the new styles' parameters train.
    """

    style_image: str
    style_size: int = dataclasses.field(default=256, kw_only=True)
    head: str = dataclasses.field(default="linear", kw_only=True)  # see choices.STYLE_HEADS
    # Temporal stability (trainer.PerceptualTrainer): weight 0 is the paper's objective.
    stability_weight: float = dataclasses.field(default=0.0, kw_only=True)
    stability_shift: int = dataclasses.field(default=8, kw_only=True)
    stability_noise: float = dataclasses.field(default=2.0, kw_only=True)
    inherited_styles: tuple = dataclasses.field(default=(), kw_only=True)

    def __post_init__(self):
        self.inherited_styles = tuple(self.inherited_styles)
        super().__post_init__()

    def style_images(self) -> list[str]:
        """The style image files: the comma-separated list, or a folder's images (sorted)."""
        if "," not in self.style_image and os.path.isdir(self.style_image):
            return images.list_images(self.style_image)
        return [p.strip() for p in self.style_image.split(",")]

    def new_style_names(self) -> tuple[str, ...]:
        """The names (file stems) of ``style_image``'s styles."""
        return tuple(_style_stem(p) for p in self.style_images())

    def style_names(self) -> tuple[str, ...]:
        """Every style of the network: the inherited ones, then ``style_image``'s."""
        return self.inherited_styles + self.new_style_names()

    def default_name(self) -> str:
        """The style image's file stem; a folder's name, or the stems joined by '-'."""
        if "," not in self.style_image and os.path.isdir(self.style_image):
            return os.path.basename(os.path.normpath(self.style_image)) or "styles"
        return "-".join(filter(None, self.new_style_names())) or "style"

    def network_config(self) -> dict:
        config = {**super().network_config(), "head": self.head}
        names = self.style_names()
        if len(names) > 1:
            config.update(num_styles=len(names), style_names=list(names))
        return config

    def to_dict(self) -> dict:
        d = super().to_dict()
        if self.inherited_styles:
            d["inherited_styles"] = list(self.inherited_styles)
        else:  # as runs recorded their config before styles could be added
            del d["inherited_styles"]
        return d


@dataclasses.dataclass(kw_only=True)
class SuperResolutionConfig(TrainingConfig):
    """A super-resolution network for one ``scale`` (the paper's Section 4.2), trained with
    feature reconstruction at ``content_layers`` (``loss="feat"``, paper: relu2_2) or the pixel
    loss (``loss="pixel"``); ``content_weight`` weighs whichever it is. Training pairs are
    ``image_size`` high-res patches and their degradation (blur ``blur_sigma``, bicubic
    downsampling by ``scale``)."""

    task = "super_resolution"
    scale: int = 4
    loss: str = "feat"
    blur_sigma: float = 1.0
    residual: str = "none"  # bicubic: the network corrects the bicubic upsampling of its input
    pixel_loss: str = "l2"  # l_pixel's distance: l2 (the paper) or l1
    chroma_weight: float = 0.0  # weight of a low-frequency colour term (any loss)
    image_size: int = 288
    steps: int = 200_000
    norm: str = "batch"
    style_weight: float = 0.0
    tv_weight: float = 0.0

    def default_name(self) -> str:
        return f"sr_x{self.scale}_{self.loss}"

    def loss_layers(self) -> tuple:
        return self.content_layers

    def network_config(self) -> dict:
        return {**super().network_config(), "scale": self.scale, "loss": self.loss,
                "residual": self.residual}


# What a run in a model_dir is trained to minimise: resuming it with other values would mix two
# objectives in one network (and config.json would name only the first).
OBJECTIVE_FIELDS = ("style_image", "style_size", "content_weight", "style_weight", "tv_weight",
                    "style_reduction", "content_layers", "style_layers", "vgg_weights",
                    "blur_sigma", "pixel_loss", "chroma_weight", "stability_weight",
                    "stability_shift", "stability_noise")


# The super-resolution network's first 9x9 conv reflects 4 pixels: low-res sides must exceed it.
MIN_LOW_RES_SIDE = 5

# The flags only style training reads; super-resolution refuses them.
STYLE_ONLY_FIELDS = ("style_image", "style_size", "style_weight", "style_layers",
                     "style_reduction", "head", "stability_weight", "stability_shift",
                     "stability_noise")
# The flags only super-resolution reads.
SR_ONLY_FIELDS = ("scale", "loss", "blur_sigma", "residual", "pixel_loss", "chroma_weight")


MAX_INT = 2 ** 31 - 1  # counts and sizes beyond this reach no tensor (int32 indices)


def _positive(config, *fields):
    for field in fields:
        value = getattr(config, field)
        if not value > 0:
            raise ConfigError(field, f"must be positive, got {value}")
        if isinstance(value, int) and value > MAX_INT:
            raise ConfigError(field, f"must be at most {MAX_INT}, got {value}")
        if isinstance(value, float) and not math.isfinite(value):
            raise ConfigError(field, f"must be finite, got {value}")


def _choice(config, field, allowed):
    value = getattr(config, field)
    if value not in allowed:
        raise ConfigError(field, f"unknown value {value!r}; expected one of {', '.join(allowed)}")


def _layers(config, field, allow_empty=False):
    value = getattr(config, field)
    if any(not name for name in value):
        raise ConfigError(field, "has an empty layer name (a stray comma?)")
    if not value and not allow_empty:
        raise ConfigError(field, "needs at least one VGG16 layer")
    try:
        choices.check_layers(value)
    except ValueError as e:
        raise ConfigError(field, str(e)) from e


def _check_train_data(config) -> None:
    """Checks the training source without downloading or decoding it."""
    source = config.train_data
    if source == SKIMAGE_SOURCE:
        return
    if source.startswith(TFDS_PREFIX):
        if not source[len(TFDS_PREFIX):].partition(":")[0]:
            raise ConfigError("train_data", f"{source}: name a dataset, as in tfds:coco/2017")
        return  # the name is checked by the pipeline, which imports tensorflow-datasets
    if not os.path.isdir(source):
        raise ConfigError("train_data", f"{source}: no such folder (write tfds:NAME for a "
                                        "tensorflow-datasets dataset, or skimage for the "
                                        "bundled photos)")
    if not images.list_images(source):
        raise ConfigError("train_data", f"{source}: no images "
                                        f"({', '.join(images.IMAGE_EXTENSIONS)}) in this folder "
                                        "or below it")


def validate_objective(config: ObjectiveConfig) -> None:
    """Raises ``ConfigError`` for the first wrong loss weight, layer or choice."""
    for field in ("content_weight", "style_weight", "tv_weight"):
        value = getattr(config, field)
        if not math.isfinite(value) or value < 0:
            raise ConfigError(field, f"must be a finite number >= 0, got {value}")
    _layers(config, "content_layers")
    _layers(config, "style_layers", allow_empty=config.style_weight == 0)
    _choice(config, "style_reduction", choices.STYLE_REDUCTIONS)
    _choice(config, "vgg_weights", choices.WEIGHT_SOURCES)


def _check_stability(config: StyleTrainingConfig) -> None:
    for field in ("stability_weight", "stability_noise"):
        value = getattr(config, field)
        if not math.isfinite(value) or value < 0:
            raise ConfigError(field, f"must be a finite number >= 0, got {value}")
    shift, room = config.stability_shift, config.image_size - 2 * choices.STABILITY_BORDER - 8
    if config.stability_weight and not 1 <= shift <= room:
        raise ConfigError("stability_shift", f"must be 1 to {max(room, 1)} pixels for "
                                             f"--image_size={config.image_size} (the two views "
                                             f"must share pixels), got {shift}")


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
    """Raises ``ConfigError`` for the first wrong value; cheap (reads the style image only)."""
    if isinstance(config, StyleTrainingConfig):
        _check_style_images(config)
        _positive(config, "style_size")
        _choice(config, "head", choices.STYLE_HEADS)
        _check_stability(config)
    _check_train_data(config)
    _positive(config, "image_size", "batch_size", "steps", "learning_rate",
              "checkpoint_every", "log_every", "sample_every")
    if config.image_size < 8:
        raise ConfigError("image_size", f"must be at least 8 pixels, got {config.image_size}")
    if config.seed < 0:
        raise ConfigError("seed", f"must not be negative, got {config.seed}")
    _choice(config, "lr_schedule", choices.LR_SCHEDULES)
    if config.warmup_steps < 0 or config.warmup_steps >= config.steps:
        raise ConfigError("warmup_steps", f"must be >= 0 and below --steps={config.steps}, got "
                                          f"{config.warmup_steps}")
    if not 0 <= config.ema < 1:
        raise ConfigError("ema", f"must be in [0, 1) (e.g. 0.999; 0 for none), got {config.ema}")
    if config.init_from and not _model_exists(config.init_from, config.export_dir):
        raise ConfigError("init_from", f"{config.init_from}: no such model (a .keras file, a "
                                       f"SavedModel folder, or a model name in "
                                       f"{config.export_dir}/ or among the shipped models)")
    if isinstance(config, SuperResolutionConfig):
        _validate_super_resolution(config)
    else:
        validate_objective(config)
    _choice(config, "norm", choices.NORMS)
    _choice(config, "upsample", choices.UPSAMPLES)
    _choice(config, "padding", choices.PADDINGS)
    _choice(config, "precision", choices.PRECISIONS)
    _choice(config, "jit_compile", choices.JIT_COMPILE)
    _choice(config, "strategy", choices.STRATEGIES)
    _choice(config, "loader", choices.LOADERS)
    if not config.name.replace("-", "").replace("_", "").replace(".", "").isalnum():
        raise ConfigError("name", f"{config.name!r}: use letters, digits, '-', '_' and '.' only")
    for field in ("model_dir", "export_dir"):
        path = getattr(config, field)
        if os.path.exists(path) and not os.path.isdir(path):
            raise ConfigError(field, f"{path}: exists and is not a folder")


def _validate_super_resolution(config: SuperResolutionConfig) -> None:
    if config.scale < 2 or config.scale & (config.scale - 1):
        raise ConfigError("scale", f"must be a power of two >= 2 (the network upsamples by 2 "
                                   f"per stage), got {config.scale}")
    if config.image_size % config.scale:
        raise ConfigError("image_size", f"{config.image_size} is not a multiple of --scale="
                                        f"{config.scale}")
    low = config.image_size // config.scale
    if low < MIN_LOW_RES_SIDE:
        raise ConfigError("image_size", f"{config.image_size} / --scale={config.scale} gives "
                                        f"{low}-pixel low-res patches; the network needs at "
                                        f"least {MIN_LOW_RES_SIDE} (use --image_size >= "
                                        f"{MIN_LOW_RES_SIDE * config.scale})")
    _choice(config, "loss", choices.SR_LOSSES)
    _choice(config, "residual", choices.RESIDUALS)
    _choice(config, "pixel_loss", choices.PIXEL_LOSSES)
    if not math.isfinite(config.chroma_weight) or config.chroma_weight < 0:
        raise ConfigError("chroma_weight", f"must be a finite number >= 0, got "
                                           f"{config.chroma_weight}")
    if not math.isfinite(config.blur_sigma) or config.blur_sigma < 0:
        raise ConfigError("blur_sigma", f"must be a finite number >= 0, got {config.blur_sigma}")
    if config.style_weight:
        raise ConfigError("style_weight", "super-resolution has no style target; leave it at 0")
    for field in ("content_weight", "tv_weight"):
        value = getattr(config, field)
        if not math.isfinite(value) or value < 0:
            raise ConfigError(field, f"must be a finite number >= 0, got {value}")
    if config.loss == "feat":
        _layers(config, "content_layers")
    _choice(config, "vgg_weights", choices.WEIGHT_SOURCES)


@dataclasses.dataclass
class GatysConfig(ObjectiveConfig):
    """One run of the Gatys optimiser (``python -m kperceptual.optimize``)."""

    content: str
    style: str
    output: str
    image_size: int = 512  # the content image's longer side; 0 keeps its size
    style_size: int = 0  # the style image's longer side; 0: the same as the content's
    optimizer: str = "lbfgs"
    iterations: int = 500
    init: str = "noise"
    seed: int = 0
    learning_rate: float = 10.0  # Adam's step, in pixel values
    lbfgs_memory: int = 20  # pairs of vectors L-BFGS keeps for its Hessian estimate
    preserve_color: bool = False
    save_every: int = 0
    overwrite: bool = False
    precision: str = "auto"  # as for training: mixed_bfloat16 where the hardware has it

    def snapshot_paths(self) -> dict[int, str]:
        """{iteration: file} that ``--save_every`` writes, as OUTPUT_STEM_<iteration>.EXT."""
        if not self.save_every:
            return {}
        root, ext = os.path.splitext(self.output)
        return {i: f"{root}_{i:04d}{ext}"
                for i in range(self.save_every, self.iterations, self.save_every)}

    def sized_images(self):
        """(content, style) as RGB uint8, resized as the sizes ask; raises ``ConfigError``."""
        content, style = (_read(self, field) for field in ("content", "style"))
        height, width = content.shape[:2]
        if self.image_size:  # checked before resizing: the resize itself may not fit
            scale = self.image_size / max(height, width)
            height, width = max(1, round(height * scale)), max(1, round(width * scale))
        check_gatys_memory(height, width, self.optimizer, self.lbfgs_memory)
        content, style = images.size_content_and_style(content, style, self.image_size,
                                                       self.style_size)
        check_gatys_sizes(content, style, self.loss_layers(), (self.content, self.style))
        return content, style


def check_gatys_sizes(content, style, layers, labels=("content", "style")) -> None:
    """Raises ``ConfigError`` if an image is too small for the loss ``layers``; ``labels`` name
    the two images in messages (e.g. their files)."""
    need = choices.min_image_side(layers)
    for field, size_flag, label, image in (("content", "image_size", labels[0], content),
                                           ("style", "style_size", labels[1], style)):
        if min(image.shape[:2]) < need:
            raise ConfigError(field, f"{label}: {image.shape[1]}x{image.shape[0]} pixels (after "
                                     f"resizing) is too small; the loss layers need at least "
                                     f"{need} pixels on each side (check --{size_flag})")


def check_gatys_memory(height: int, width: int, optimizer: str = "lbfgs",
                       lbfgs_memory: int = 20) -> None:
    """Raises ``ConfigError`` if optimising a ``height`` x ``width`` image would need more
    memory than this machine has."""
    values = height * width * 3
    # L-BFGS-B keeps 2 x lbfgs_memory vectors of float64 and a few more; VGG16's activations
    # for the gradient come to roughly 1 KB per pixel value. A rough bound: a 512x384 run
    # peaked at 1.8 GB resident here, this estimate says 0.9 GB plus the framework's own.
    lbfgs = values * 8 * (2 * lbfgs_memory + 8) if optimizer == "lbfgs" else 0
    needed = lbfgs + values * 1100
    available = _physical_memory()
    if available and needed > available:
        raise ConfigError("image_size", f"a {width}x{height} image needs about "
                                        f"{needed / 2**30:.0f} GiB to optimise "
                                        f"(--lbfgs_memory={lbfgs_memory}), more than this "
                                        f"machine's {available / 2**30:.0f} GiB; use a smaller "
                                        "--image_size or --lbfgs_memory")


def _physical_memory() -> int:
    try:
        return os.sysconf("SC_PHYS_PAGES") * os.sysconf("SC_PAGE_SIZE")
    except (ValueError, OSError, AttributeError):
        return 0


# Multi-style training batches carry each example's style index as uint8.
MAX_STYLES = 255


def _check_style_images(config: StyleTrainingConfig) -> None:
    """Every style image readable, names (file stems) distinct, at most MAX_STYLES styles."""
    paths = config.style_images()
    if not paths or any(not p for p in paths):
        raise ConfigError("style_image", f"{config.style_image!r}: "
                          + ("no images in this folder" if not paths
                             else "has an empty entry (a stray comma?)"))
    for path in paths:
        _read(config, "style_image", path)
    names = config.style_names()
    repeated = sorted({n for n in names if names.count(n) > 1})
    if repeated:
        where = " (already a style of --init_from)" if set(repeated) & set(
            config.inherited_styles) else ""
        raise ConfigError("style_image", f"style names (file stems) must be distinct; "
                          f"{', '.join(repeated)} comes twice{where}")
    if len(names) > MAX_STYLES:
        raise ConfigError("style_image", f"{len(names)} styles; at most {MAX_STYLES}")
    if len(names) > 1 and config.norm != "instance":
        raise ConfigError("norm", f"several styles need --norm=instance (conditional instance "
                                  f"normalisation), not {config.norm}")


def _read(config, field, path=None):
    path = getattr(config, field) if path is None else path
    if not images.image_source_exists(path):
        raise ConfigError(field, f"{path}: no such file")
    try:
        return images.read_image(path)
    except images.ImageError as e:
        raise ConfigError(field, str(e)) from e


def _check_writable_file(field: str, path: str, overwrite: bool, inputs: dict) -> None:
    """An image file we may create at ``path``: named with an image extension, in a folder that
    exists or can be made, not one of ``inputs`` ({flag: path}), not existing unless
    ``overwrite``."""
    stem, ext = os.path.splitext(os.path.basename(path))
    if not stem or ext.lower() not in images.IMAGE_EXTENSIONS:
        raise ConfigError(field, f"{path}: name an image file ending in "
                                 f"{', '.join(images.IMAGE_EXTENSIONS)}")
    if os.path.isdir(path):
        raise ConfigError(field, f"{path}: is a folder; name an image file")
    parent = os.path.dirname(os.path.abspath(path))
    while not os.path.exists(parent):
        parent = os.path.dirname(parent)
    if not os.path.isdir(parent) or not os.access(parent, os.W_OK):
        raise ConfigError(field, f"{path}: cannot be written ({parent} is not a writable folder)")
    if os.path.exists(path):
        for flag, source in inputs.items():
            if os.path.exists(source) and os.path.samefile(path, source):
                raise ConfigError(field, f"{path}: is the --{flag}; choose another file")
        if not overwrite:
            raise ConfigError(field, f"{path}: already exists (pass --overwrite to replace it)")


def validate_gatys(config: GatysConfig):
    """Raises ``ConfigError`` for the first wrong value; returns the sized (content, style)."""
    for field in ("image_size", "style_size", "save_every", "seed"):
        if getattr(config, field) < 0:
            raise ConfigError(field, f"must not be negative, got {getattr(config, field)}")
    _positive(config, "iterations", "learning_rate", "lbfgs_memory")
    if config.save_every and config.save_every >= config.iterations:
        raise ConfigError("save_every", f"{config.save_every} is not below --iterations="
                                        f"{config.iterations}, so nothing would be saved")
    _choice(config, "optimizer", choices.GATYS_OPTIMIZERS)
    _choice(config, "init", choices.GATYS_INITS)
    _choice(config, "precision", choices.GATYS_PRECISIONS)
    validate_objective(config)
    inputs = {"content": config.content, "style": config.style}
    _check_writable_file("output", config.output, config.overwrite, inputs)
    for path in config.snapshot_paths().values():
        _check_writable_file("save_every", path, config.overwrite, inputs)
    return config.sized_images()
