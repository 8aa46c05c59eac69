"""Super-resolution, the paper's Section 4.2: its training config (``SuperResolutionConfig``),
checks, network, data source (high-res patches and their degradation), objective (l_feat at
relu2_2 or l_pixel, an optional colour term) and the samples shown while it trains.
"""

from __future__ import annotations

import dataclasses

from kperceptual import choices
from kperceptual.errors import FlagError, check_choice, check_finite
from kperceptual.losses.config import check_layers
from kperceptual.training.config import TrainingConfig


# The flags only super-resolution reads.
SR_ONLY_FIELDS = ("scale", "loss", "blur_sigma", "residual", "pixel_loss", "chroma_weight",
                  "pixel_weight", "grid_weight")


@dataclasses.dataclass(kw_only=True)
class SuperResolutionConfig(TrainingConfig):
    """A super-resolution network for one ``scale`` (the paper's Section 4.2), trained with
    feature reconstruction at ``content_layers`` (``loss="feat"``, paper: relu2_2) or the pixel
    loss (``loss="pixel"``); ``content_weight`` weighs whichever it is. Training pairs are
    ``image_size`` high-res patches and their degradation (blur ``blur_sigma``, bicubic
    downsampling by ``scale``)."""

    task = "super_resolution"
    TASK_FIELDS = SR_ONLY_FIELDS  # the flags only this task reads
    scale: int = 4
    loss: str = "feat"
    blur_sigma: float = 1.0
    residual: str = "none"  # bicubic: the network corrects the bicubic upsampling of its input
    pixel_loss: str = "l2"  # l_pixel's distance: l2 (the paper) or l1
    chroma_weight: float = 0.0  # weight of a low-frequency colour term (any loss)
    pixel_weight: float = 0.0  # loss=feat: weight of l_pixel (--pixel_loss) beside l_feat
    grid_weight: float = 0.0  # weight of a term against error that repeats with the LR grid
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

    def check_task(self) -> None:
        _validate_super_resolution(self)

    def make_network(self, **kwargs):
        from kperceptual import networks

        return networks.SuperResolutionNetwork(**self.network_config(), **kwargs)

    def make_source(self):
        from kperceptual.data import sources

        return sources.SuperResolutionPairs(self.train_data, self.image_size, self.scale,
                                            self.blur_sigma, self.tfds_data_dir)

    def make_objective(self, loss_net=None):
        from kperceptual.losses import objective

        return objective.objective_from_config(self, None, loss_net)

    def sample_inputs(self) -> list:
        """Degraded high-res crops of the sample photos."""
        from kperceptual.data import degradation

        return [degradation.degrade(c, self.scale, self.blur_sigma)
                for c in super().sample_inputs()]


# The super-resolution network's first 9x9 conv reflects 4 pixels: low-res sides must exceed it.
MIN_LOW_RES_SIDE = 5




def _validate_super_resolution(config: SuperResolutionConfig) -> None:
    if config.scale < 2 or config.scale & (config.scale - 1):
        raise FlagError("scale", f"must be a power of two >= 2 (the network upsamples by 2 "
                                  f"per stage), got {config.scale}")
    if config.image_size % config.scale:
        raise FlagError("image_size", f"{config.image_size} is not a multiple of --scale="
                                       f"{config.scale}")
    low = config.image_size // config.scale
    if low < MIN_LOW_RES_SIDE:
        raise FlagError("image_size", f"{config.image_size} / --scale={config.scale} gives "
                                       f"{low}-pixel low-res patches; the network needs at "
                                       f"least {MIN_LOW_RES_SIDE} (use --image_size >= "
                                       f"{MIN_LOW_RES_SIDE * config.scale})")
    check_choice(config, "loss", choices.SR_LOSSES)
    check_choice(config, "residual", choices.RESIDUALS)
    check_choice(config, "pixel_loss", choices.PIXEL_LOSSES)
    check_finite(config, "chroma_weight", "blur_sigma", "pixel_weight", "grid_weight")
    if config.style_weight:
        raise FlagError("style_weight", "super-resolution has no style target; leave it at 0")
    check_finite(config, "content_weight", "tv_weight")
    if config.loss == "feat":
        check_layers(config, "content_layers")
    if config.loss_shift and config.loss != "feat":
        raise FlagError("loss_shift", "applies to --loss=feat only (the pixel loss has no "
                                       "pooling grid); leave it at 0")
    check_choice(config, "vgg_weights", choices.WEIGHT_SOURCES)
