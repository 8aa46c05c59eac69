"""The paper's weighted objective, which every task, the Gatys optimiser, evaluation and the
benchmarks build from an ``ObjectiveConfig`` (``objective_from_config``): the perceptual
objective, the pixel objective of l_pixel super-resolution, and the colour term beside either.
Backend-neutral (``keras.ops``).
"""

from __future__ import annotations

import numpy as np
from keras import ops

from kperceptual.choices import PIXEL_LOSSES, STYLE_REDUCTIONS
from kperceptual.losses.loss_network import LossNetwork
from kperceptual.losses.perceptual import (chroma_loss, feature_reconstruction_loss, gram_matrix,
                                          grid_loss, grid_window, pixel_loss,
                                          style_reconstruction_loss, total_variation_loss)


class PerceptualObjective:
    """The paper's weighted objective, one definition for training, optimisation and evaluation:

        lambda_c * sum_j l_feat^j(y^, y_c) + lambda_s * sum_j l_style^j(y^, y_s) + lambda_TV * l_TV(y^)

    Args:
        loss_network: a ``LossNetwork`` returning every content and style layer.
        style_targets: ``{layer: Gram matrices (N, C, C)}`` of the N style images (one for the
            paper's network, several for a multi-style network), or ``None`` when
            ``style_weight`` is 0.
        content_layers, style_layers: paper layer names.
        content_weight, style_weight, tv_weight: lambda_c, lambda_s, lambda_TV.
        style_reduction: ``"sum"`` (paper) or ``"mean"`` over the Gram entries.
    """

    def __init__(self, loss_network, style_targets=None, content_layers=("relu2_2",),
                 style_layers=("relu1_2", "relu2_2", "relu3_3", "relu4_3"),
                 content_weight=1.0, style_weight=1.0, tv_weight=0.0, style_reduction="sum"):
        missing = [l for l in (*content_layers, *(style_layers if style_weight else ()))
                   if l not in loss_network.layer_names]
        if missing:
            raise ValueError(f"loss network does not return {', '.join(missing)}")
        if style_weight and style_targets is None:
            raise ValueError("style_weight > 0 needs style_targets")
        if style_reduction not in STYLE_REDUCTIONS:
            raise ValueError(f"unknown style reduction {style_reduction!r}")
        self.loss_network = loss_network
        self.style_targets = style_targets
        self.content_layers = tuple(content_layers)
        self.style_layers = tuple(style_layers)
        self.content_weight = float(content_weight)
        self.style_weight = float(style_weight)
        self.tv_weight = float(tv_weight)
        self.style_reduction = style_reduction
        # Style objectives log every term; feature reconstruction alone (super-resolution's
        # l_feat) logs the terms it has.
        self.terms = (("total", "content", "style", "tv") if self.style_weight else
                      ("total", "content") + (("tv",) if self.tv_weight else ()))
        # The content images need only the content layers: a cut of the same VGG16, so no
        # deeper layer is computed for them.
        self._content_features = loss_network.partial(self.content_layers)

    def content_targets(self, content_images):
        """Features of the content images at the content layers (no gradient needed)."""
        features = self._content_features(content_images)
        return {layer: ops.stop_gradient(features[layer]) for layer in self.content_layers}

    def __call__(self, images, content_targets, styles=None):
        """Per-example weighted loss terms: {"content", "style", "tv", "total"}, each (B,);
        ``self.terms`` names the ones that can be non-zero. ``styles`` (B,) int: the style
        each example is scored against (its row of ``style_targets``); None: the first (the
        one style image)."""
        features = self.loss_network(images)
        zero = ops.zeros((ops.shape(images)[0],), "float32")
        content = zero
        for layer in self.content_layers:
            content = content + feature_reconstruction_loss(features[layer],
                                                            content_targets[layer])
        style = zero
        if self.style_weight:
            for layer in self.style_layers:
                target = self.style_targets[layer]
                target = target[:1] if styles is None else ops.take(
                    ops.convert_to_tensor(target, "float32"), styles, axis=0)
                style = style + style_reconstruction_loss(
                    gram_matrix(features[layer]), target, self.style_reduction)
        tv = total_variation_loss(images) if self.tv_weight else zero
        terms = {
            "content": self.content_weight * content,
            "style": self.style_weight * style,
            "tv": self.tv_weight * tv,
        }
        terms["total"] = terms["content"] + terms["style"] + terms["tv"]
        return terms


class PixelLossObjective:
    """The l_pixel super-resolution objective: lambda_pixel * l_pixel(y^, y) + lambda_TV *
    l_TV(y^), with the same interface as ``PerceptualObjective`` (no loss network);
    ``distance`` is ``"l2"`` (the paper's squared error) or ``"l1"``."""

    def __init__(self, pixel_weight=1.0, tv_weight=0.0, distance="l2"):
        if distance not in PIXEL_LOSSES:
            raise ValueError(f"unknown pixel loss {distance!r}; expected one of {PIXEL_LOSSES}")
        self.pixel_weight = float(pixel_weight)
        self.tv_weight = float(tv_weight)
        self.distance = distance
        self.loss_network = None
        self.terms = ("total", "pixel") + (("tv",) if self.tv_weight else ())

    def content_targets(self, images):
        """The target images themselves, as float32."""
        return ops.cast(images, "float32")

    def __call__(self, images, targets):
        """Per-example weighted terms {"pixel", "tv", "total"}, each (B,)."""
        pixel = self.pixel_weight * pixel_loss(images, targets, self.distance)
        tv = (self.tv_weight * total_variation_loss(images) if self.tv_weight
              else ops.zeros_like(pixel))
        return {"pixel": pixel, "tv": tv, "total": pixel + tv}


class WithImageTerm:
    """``objective`` plus ``weight`` x ``term(y^, y)``, a per-example loss against the target
    images, logged under ``name``: the same interface as ``objective``."""

    def __init__(self, objective, name: str, weight: float, term):
        self.objective = objective
        self.name = name
        self.weight = float(weight)
        self.term = term
        self.loss_network = getattr(objective, "loss_network", None)
        self.terms = objective.terms + (name,)

    def content_targets(self, images):
        return self.objective.content_targets(images), ops.cast(images, "float32")

    def __call__(self, images, targets):
        inner, target_images = targets
        terms = dict(self.objective(images, inner))
        terms[self.name] = self.weight * self.term(images, target_images)
        terms["total"] = terms["total"] + terms[self.name]
        return terms


class WithChroma(WithImageTerm):
    """``objective`` plus ``weight`` x ``chroma_loss(y^, y, pool)``: keeps a greyscale input's
    output grey and the colours of l_feat's outputs where the low-res input has them."""

    def __init__(self, objective, weight, pool=1):
        super().__init__(objective, "chroma", weight,
                         lambda images, targets: chroma_loss(images, targets, int(pool)))


class WithLossShift:
    """``objective`` (a perceptual objective) scored on the output and its target both cropped
    by ``shift`` pixels, at the same offset (dy, dx) in [0, shift) that changes from batch to
    batch. Two uses:

    * super-resolution: VGG16's pooling grid lands at a different phase of the network's
      upsampling grid each batch, so a pattern fixed to that grid (the lattice an x4 network
      learns against the stride-4 relu3_3 and stride-8 relu4_3) is not rewarded;
    * style: the scored window's edges fall at a different distance from the input's edges
      each batch, so a band along the borders (which VGG16's zero padding rewards beside the
      image's outermost pixels) is not learned.

    The offset is drawn from the batch's own pixels (no random state: every backend and the
    distributed step agree). Same interface as ``objective``."""

    def __init__(self, objective, shift: int):
        self.objective = objective
        self.shift = int(shift)
        self.loss_network = getattr(objective, "loss_network", None)
        self.terms = objective.terms

    def content_targets(self, images):
        return ops.cast(images, "float32")

    def offsets(self, targets):
        """(dy, dx) int32 scalars in [0, shift), a hash of the batch's per-example means."""
        total = ops.sum(ops.mean(targets, axis=(1, 2, 3)))
        dy = ops.cast(ops.floor(total * 37.0), "int32") % self.shift
        dx = ops.cast(ops.floor(total * 101.0), "int32") % self.shift
        return dy, dx

    def crop(self, images, dy, dx):
        height, width = images.shape[1], images.shape[2]
        rows = dy + ops.arange(height - self.shift, dtype="int32")
        cols = dx + ops.arange(width - self.shift, dtype="int32")
        return ops.take(ops.take(images, rows, axis=1), cols, axis=2)

    def __call__(self, images, targets, **kwargs):
        dy, dx = self.offsets(targets)
        targets = self.crop(targets, dy, dx)
        return self.objective(self.crop(images, dy, dx),
                              self.objective.content_targets(targets), **kwargs)


def style_targets_from_image(loss_network, style_image, style_layers):
    """Gram matrices (1, C, C) of one style image (H, W, 3) or (1, H, W, 3) in [0, 255]."""
    style_image = ops.convert_to_tensor(style_image, "float32")
    if len(style_image.shape) == 3:
        style_image = style_image[None]
    features = loss_network(style_image)
    return {layer: ops.convert_to_numpy(gram_matrix(features[layer])) for layer in style_layers}


def style_targets_from_images(loss_network, style_images, style_layers):
    """Gram matrices (N, C, C) of N style images (each (H, W, 3) in [0, 255], sizes may
    differ), row i that of image i."""
    targets = [style_targets_from_image(loss_network, image, style_layers)
               for image in style_images]
    return {layer: np.concatenate([t[layer] for t in targets]) for layer in style_layers}


def objective_from_config(config, style_image=None, loss_net=None):
    """The objective a ``config.ObjectiveConfig`` describes, for one style image (H, W, 3) in
    [0, 255] or a list of them (a multi-style network's, in its style order; None when the
    style weight is 0); builds the loss network unless ``loss_net``
    (returning ``config.loss_layers()``) is given. Training (style and super-resolution) and
    the Gatys optimiser all build their objective here. A config with ``loss == "pixel"``
    (super-resolution's l_pixel) gives a ``PixelLossObjective``, which needs no loss network."""
    if getattr(config, "loss", None) == "pixel":
        objective = PixelLossObjective(config.content_weight, config.tv_weight,
                                       config.pixel_loss)
    else:
        if loss_net is None:
            loss_net = LossNetwork(config.loss_layers(), weights=config.vgg_weights)
        style_images = style_image if isinstance(style_image, (list, tuple)) else [style_image]
        style_targets = (style_targets_from_images(loss_net, style_images, config.style_layers)
                         if config.style_weight else None)
        objective = PerceptualObjective(loss_net, style_targets, **config.objective_kwargs())
        if getattr(config, "loss_shift", 0):
            objective = WithLossShift(objective, config.loss_shift)
    if getattr(config, "loss", None) == "feat" and getattr(config, "pixel_weight", 0):
        # l_pixel beside l_feat: anchors the output to the truth's pixels, against the lattice
        # textures that feature losses at pooled layers favour.
        objective = WithImageTerm(objective, "pixel", config.pixel_weight,
                                  lambda images, targets: pixel_loss(images, targets,
                                                                     config.pixel_loss))
    if getattr(config, "grid_weight", 0):
        # Against the lattice an l_feat network paints in step with its upsampling grid.
        window = grid_window(config.image_size, config.scale)
        objective = WithImageTerm(objective, "grid", config.grid_weight,
                                  lambda images, targets: grid_loss(images, targets,
                                                                    config.scale, window))
    if getattr(config, "chroma_weight", 0):
        # Colour below the network's input resolution is what the input already tells.
        objective = WithChroma(objective, config.chroma_weight, pool=config.scale)
    return objective
