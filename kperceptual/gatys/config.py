"""One run of the Gatys optimiser (``python -m kperceptual.optimize``): its config and checks,
raised as ``FlagError`` before any work starts. Importable without Keras or TensorFlow.
"""

from __future__ import annotations

import dataclasses
import os

import numpy as np

from kperceptual import choices
from kperceptual.errors import FlagError, check_choice, check_positive
from kperceptual.imaging import images
from kperceptual.imaging.images import read_flag_image
from kperceptual.losses.config import ObjectiveConfig, validate_objective


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
    init_image: str = ""  # the image --init=image starts from (e.g. a style network's output)
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
        content, style = (read_flag_image(self, field) for field in ("content", "style"))
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
            raise FlagError(field, f"{label}: {image.shape[1]}x{image.shape[0]} pixels (after "
                                    f"resizing) is too small; the loss layers need at least "
                                    f"{need} pixels on each side (check --{size_flag})")


def check_gatys_memory(height: int, width: int, optimizer: str = "lbfgs",
                       lbfgs_memory: int = 20) -> None:
    """Raises ``ConfigError`` if optimising a ``height`` x ``width`` image would need more
    memory than this machine has."""
    values = height * width * 3
    # Either L-BFGS keeps 2 x lbfgs_memory vectors of float64 and a few more; VGG16's
    # activations for the gradient come to roughly 1 KB per pixel value. A rough bound: a
    # 512x384 run peaked at 1.8 GB resident here, this estimate says 0.9 GB plus the
    # framework's own.
    lbfgs = values * 8 * (2 * lbfgs_memory + 8) if optimizer.startswith("lbfgs") else 0
    needed = lbfgs + values * 1100
    available = _physical_memory()
    if available and needed > available:
        raise FlagError("image_size", f"a {width}x{height} image needs about "
                                       f"{needed / 2**30:.0f} GiB to optimise "
                                       f"(--lbfgs_memory={lbfgs_memory}), more than this "
                                       f"machine's {available / 2**30:.0f} GiB; use a smaller "
                                       "--image_size or --lbfgs_memory")


def _physical_memory() -> int:
    try:
        return os.sysconf("SC_PHYS_PAGES") * os.sysconf("SC_PAGE_SIZE")
    except (ValueError, OSError, AttributeError):
        return 0


def _check_writable_file(field: str, path: str, overwrite: bool, inputs: dict) -> None:
    """An image file we may create at ``path``: named with an image extension, in a folder that
    exists or can be made, not one of ``inputs`` ({flag: path}), not existing unless
    ``overwrite``."""
    stem, ext = os.path.splitext(os.path.basename(path))
    if not stem or ext.lower() not in images.IMAGE_EXTENSIONS:
        raise FlagError(field, f"{path}: name an image file ending in "
                                f"{', '.join(images.IMAGE_EXTENSIONS)}")
    if os.path.isdir(path):
        raise FlagError(field, f"{path}: is a folder; name an image file")
    parent = os.path.dirname(os.path.abspath(path))
    while not os.path.exists(parent):
        parent = os.path.dirname(parent)
    if not os.path.isdir(parent) or not os.access(parent, os.W_OK):
        raise FlagError(field, f"{path}: cannot be written ({parent} is not a writable folder)")
    if os.path.exists(path):
        for flag, source in inputs.items():
            if os.path.exists(source) and os.path.samefile(path, source):
                raise FlagError(field, f"{path}: is the --{flag}; choose another file")
        if not overwrite:
            raise FlagError(field, f"{path}: already exists (pass --overwrite to replace it)")


def validate_gatys(config: GatysConfig):
    """Raises ``ConfigError`` for the first wrong value; returns the sized (content, style,
    start): ``start`` is the ``--init_image`` fitted to the content's size, or None."""
    for field in ("image_size", "style_size", "save_every", "seed"):
        if getattr(config, field) < 0:
            raise FlagError(field, f"must not be negative, got {getattr(config, field)}")
    check_positive(config, "iterations", "learning_rate", "lbfgs_memory")
    if config.save_every and config.save_every >= config.iterations:
        raise FlagError("save_every", f"{config.save_every} is not below --iterations="
                                       f"{config.iterations}, so nothing would be saved")
    check_choice(config, "optimizer", choices.GATYS_OPTIMIZERS)
    check_choice(config, "init", choices.GATYS_INITS)
    check_init(config.init, config.init_image)
    check_choice(config, "precision", choices.GATYS_PRECISIONS)
    validate_objective(config)
    inputs = {"content": config.content, "style": config.style}
    if config.init_image:
        inputs["init_image"] = config.init_image
    _check_writable_file("output", config.output, config.overwrite, inputs)
    for path in config.snapshot_paths().values():
        _check_writable_file("save_every", path, config.overwrite, inputs)
    content, style = config.sized_images()
    start = (fit_init_image(read_flag_image(config, "init_image"), content,
                            f"{config.init_image}: ") if config.init_image else None)
    return content, style, start


def check_init(init: str, init_image) -> None:
    """Raises ``FlagError`` unless an image to start from is given exactly when ``init`` is
    ``"image"``."""
    given = init_image is not None and not (isinstance(init_image, str) and init_image == "")
    if init == "image" and not given:
        raise FlagError("init_image", "required with --init=image: the image to start from")
    if given and init != "image":
        raise FlagError("init_image", f"given, but --init={init}; pass --init=image to start "
                                      "from it")


def fit_init_image(image, content, label: str = ""):
    """The image ``--init=image`` starts from as RGB (grey repeated, alpha dropped), resized to
    ``content``'s size; raises ``FlagError`` if its aspect ratio is more than 2% from the
    content's (``label`` prefixes the message, e.g. the file)."""
    image = np.asarray(image)
    if image.ndim == 2:
        image = np.repeat(image[..., None], 3, axis=-1)
    if image.ndim != 3 or image.shape[-1] not in (3, 4) or min(image.shape[:2]) < 1:
        raise FlagError("init_image", f"{label}an array of shape {image.shape}; expected an "
                                      "RGB image (H, W, 3)")
    image = images.to_uint8(image[..., :3])
    fitted = images.fit_to_shape(image, *content.shape[:2])
    if fitted is None:
        raise FlagError("init_image", f"{label}its aspect ratio ({image.shape[1]}x"
                                      f"{image.shape[0]} pixels) is more than 2% from the "
                                      f"content's ({content.shape[1]}x{content.shape[0]} "
                                      "after resizing)")
    return fitted
