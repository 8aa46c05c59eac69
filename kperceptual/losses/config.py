"""The objective's configuration (``ObjectiveConfig``), shared by training and the Gatys
optimiser so that both minimise the same function with the same defaults, and its checks.
Importable without Keras or TensorFlow: flags are checked before any framework starts.
"""

from __future__ import annotations

import dataclasses

from kperceptual import choices
from kperceptual.errors import FlagError, check_choice, check_finite


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
        """Keyword arguments of ``PerceptualObjective`` besides the networks."""
        return {"content_layers": self.content_layers, "style_layers": self.style_layers,
                "content_weight": self.content_weight, "style_weight": self.style_weight,
                "tv_weight": self.tv_weight, "style_reduction": self.style_reduction}

    def to_dict(self) -> dict:
        d = dataclasses.asdict(self)
        d["content_layers"] = list(self.content_layers)
        d["style_layers"] = list(self.style_layers)
        return d


def check_layers(config, field, allow_empty=False):
    """``config.<field>`` names VGG16 layers the loss network has."""
    value = getattr(config, field)
    if any(not name for name in value):
        raise FlagError(field, "has an empty layer name (a stray comma?)")
    if not value and not allow_empty:
        raise FlagError(field, "needs at least one VGG16 layer")
    try:
        choices.check_layers(value)
    except ValueError as e:
        raise FlagError(field, str(e)) from e


def validate_objective(config: ObjectiveConfig) -> None:
    """Raises ``FlagError`` for the first wrong loss weight, layer or choice."""
    check_finite(config, "content_weight", "style_weight", "tv_weight")
    check_layers(config, "content_layers")
    check_layers(config, "style_layers", allow_empty=config.style_weight == 0)
    check_choice(config, "style_reduction", choices.STYLE_REDUCTIONS)
    check_choice(config, "vgg_weights", choices.WEIGHT_SOURCES)
