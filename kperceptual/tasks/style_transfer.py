"""Style transfer, the paper's Section 3: its training config (``StyleTrainingConfig``: one
style image, or several for one multi-style network), checks, network, data source, objective
(content at relu2_2, style at relu1_2 to relu4_3, total variation; the optional stability term)
and the samples shown while it trains.
"""

from __future__ import annotations

import dataclasses
import os

from kperceptual import choices
from kperceptual.errors import FlagError, check_choice, check_finite, check_positive
from kperceptual.imaging import images
from kperceptual.imaging.images import read_flag_image
from kperceptual.losses.config import validate_objective
from kperceptual.training.config import TrainingConfig


# The flags only style training reads; the other tasks refuse them.
STYLE_ONLY_FIELDS = ("style_image", "style_size", "style_weight", "style_layers",
                     "style_reduction", "head", "filters", "stability_weight", "stability_shift",
                     "stability_noise", "tune_styles")
# The paper's filters (supplementary Table 1): the three downsampling convolutions'.
PAPER_FILTERS = (32, 64, 128)


@dataclasses.dataclass
class StyleTrainingConfig(TrainingConfig):
    """A style transformation network for one style image (the paper's Section 3), or for
    several (``style_image`` a comma-separated list or a folder): one network with conditional
    instance normalisation (Dumoulin et al. 2017), each style named by its file stem.

    ``inherited_styles`` (not a flag; ``trainer.resolve_init_from`` sets it): the styles of an
    ``init_from`` multi-style network this one adds its styles to; the network has those first,
    then ``style_image``'s, and only the new styles' parameters train.

    ``tune_styles`` (``--tune_styles``): with an ``init_from`` multi-style network and
    ``style_image`` some of its styles, only those styles' scales and shifts train; the network
    keeps all of its styles (``network_styles``, set by ``trainer.resolve_init_from``, in its
    order) and every other weight bit-identical.
    """

    TASK_FIELDS = STYLE_ONLY_FIELDS  # the flags only this task reads

    style_image: str
    style_size: int = dataclasses.field(default=256, kw_only=True)
    head: str = dataclasses.field(default="linear", kw_only=True)  # see choices.STYLE_HEADS
    # The downsampling convolutions' filters (the upsampling ones mirror the first two).
    filters: tuple = dataclasses.field(default=PAPER_FILTERS, kw_only=True)
    # Temporal stability (trainer.PerceptualTrainer): weight 0 is the paper's objective.
    stability_weight: float = dataclasses.field(default=0.0, kw_only=True)
    stability_shift: int = dataclasses.field(default=8, kw_only=True)
    stability_noise: float = dataclasses.field(default=2.0, kw_only=True)
    inherited_styles: tuple = dataclasses.field(default=(), kw_only=True)
    tune_styles: bool = dataclasses.field(default=False, kw_only=True)
    network_styles: tuple = dataclasses.field(default=(), kw_only=True)

    def __post_init__(self):
        self.inherited_styles = tuple(self.inherited_styles)
        self.network_styles = tuple(self.network_styles)
        try:  # flags give strings; check_task names a value that is not a number
            self.filters = tuple(int(f) for f in self.filters)
        except (TypeError, ValueError):
            pass
        super().__post_init__()

    def style_images(self) -> list[str]:
        """The style image files: the comma-separated list, or a folder's images (sorted)."""
        if "," not in self.style_image and os.path.isdir(self.style_image):
            return images.list_images(self.style_image)
        return [p.strip() for p in self.style_image.split(",")]

    def new_style_names(self) -> tuple[str, ...]:
        """The names (file stems) of ``style_image``'s styles."""
        return tuple(images.image_stem(p) for p in self.style_images())

    def style_names(self) -> tuple[str, ...]:
        """Every style of the network: the inherited ones, then ``style_image``'s (a network
        tuning some of its styles: all of its own, in its order)."""
        return self.network_styles or self.inherited_styles + self.new_style_names()

    def default_name(self) -> str:
        """The style image's file stem; a folder's name, or the stems joined by '-'; with
        ``tune_styles``, that and ``_tuned`` (not the one-style network of that name)."""
        if "," not in self.style_image and os.path.isdir(self.style_image):
            name = os.path.basename(os.path.normpath(self.style_image)) or "styles"
        else:
            name = "-".join(filter(None, self.new_style_names())) or "style"
        return f"{name}_tuned" if self.tune_styles else name

    def network_config(self) -> dict:
        config = {**super().network_config(), "head": self.head, "filters": list(self.filters)}
        names = self.style_names()
        if len(names) > 1:
            config.update(num_styles=len(names), style_names=list(names))
        return config

    def check_task(self) -> None:
        _check_style_images(self)
        check_positive(self, "style_size")
        check_choice(self, "head", choices.STYLE_HEADS)
        if (not isinstance(self.filters, tuple) or len(self.filters) != 3
                or not all(isinstance(f, int) and f > 0 for f in self.filters)):
            raise FlagError("filters", "must be three positive whole numbers, e.g. 32,64,128 "
                                       f"(the paper's), got {','.join(map(str, self.filters))}")
        _check_stability(self)
        if self.tune_styles and not self.init_from:
            raise FlagError("tune_styles", "needs --init_from: the multi-style network whose "
                                           "styles --style_image names")
        validate_objective(self)

    def make_network(self, **kwargs):
        from kperceptual import networks

        return networks.StyleTransferNetwork(**self.network_config(), **kwargs)

    def trained_styles(self) -> tuple[int, ...]:
        """All of a new network's styles; only the new ones of a network that adds styles to an
        ``init_from`` multi-style network; only ``style_image``'s of one tuning its styles."""
        if self.network_styles:
            return tuple(self.network_styles.index(n) for n in self.new_style_names())
        first = len(self.inherited_styles)
        return tuple(range(first, first + len(self.new_style_names())))

    def make_source(self):
        from kperceptual.data import sources

        if len(self.style_names()) > 1:
            trained, names = self.trained_styles(), self.style_names()
            return sources.MultiStyleImages(self.train_data, self.image_size, trained,
                                            self.tfds_data_dir, [names[i] for i in trained])
        return sources.TrainingImages(self.train_data, self.image_size, self.tfds_data_dir)

    def load_style_images(self) -> list:
        """The style images of ``style_image``, in the order of its new styles, resized to
        ``style_size`` on their long side."""
        return [images.resize_long_side(images.read_image(path), self.style_size)
                for path in self.style_images()]

    def make_objective(self, loss_net=None):
        import numpy as np

        from kperceptual.losses import objective

        style = [s.astype(np.float32) for s in self.load_style_images()]
        # Targets for every style of the network; styles that never train get any (the first).
        if self.network_styles:
            given = dict(zip(self.new_style_names(), style))
            style = [given.get(n, style[0]) for n in self.network_styles]
        else:
            style = [style[0]] * len(self.inherited_styles) + style
        return objective.objective_from_config(self, style if len(style) > 1 else style[0],
                                               loss_net)

    def trainer_options(self) -> dict:
        return dict(stability_weight=self.stability_weight,
                    stability_shift=self.stability_shift,
                    stability_noise=self.stability_noise, seed=self.seed)

    def to_dict(self) -> dict:
        d = super().to_dict()
        # As runs recorded their config before styles could be added or tuned: these only when set.
        for key in ("inherited_styles", "network_styles", "tune_styles"):
            if d[key]:
                d[key] = list(d[key]) if isinstance(d[key], tuple) else d[key]
            else:
                del d[key]
        return d




# Multi-style training batches carry each example's style index as uint8.
MAX_STYLES = 255


def _check_style_images(config: StyleTrainingConfig) -> None:
    """Every style image readable, names (file stems) distinct, at most MAX_STYLES styles."""
    paths = config.style_images()
    if not paths or any(not p for p in paths):
        raise FlagError("style_image", f"{config.style_image!r}: "
                         + ("no images in this folder" if not paths
                             else "has an empty entry (a stray comma?)"))
    for path in paths:
        read_flag_image(config, "style_image", path)
    names = config.style_names()
    repeated = sorted({n for n in names if names.count(n) > 1})
    if repeated:
        where = " (already a style of --init_from)" if set(repeated) & set(
            config.inherited_styles) else ""
        raise FlagError("style_image", f"style names (file stems) must be distinct; "
                         f"{', '.join(repeated)} comes twice{where}")
    if len(names) > MAX_STYLES:
        raise FlagError("style_image", f"{len(names)} styles; at most {MAX_STYLES}")
    if len(names) > 1 and config.norm != "instance":
        raise FlagError("norm", f"several styles need --norm=instance (conditional instance "
                                 f"normalisation), not {config.norm}")


def _check_stability(config: StyleTrainingConfig) -> None:
    check_finite(config, "stability_weight", "stability_noise")
    shift, room = config.stability_shift, config.image_size - 2 * choices.STABILITY_BORDER - 8
    if config.stability_weight and not 1 <= shift <= room:
        raise FlagError("stability_shift", f"must be 1 to {max(room, 1)} pixels for "
                                            f"--image_size={config.image_size} (the two views "
                                            f"must share pixels), got {shift}")
