"""The super-resolution network of Johnson et al. (2016), supplementary Table 2:
``SuperResolutionNetwork``, with the global residual over bicubic offered beside the paper's
network. Backend-neutral.
"""

from __future__ import annotations

import keras
from keras import layers


from kperceptual.networks.layers import (BicubicUpsampling2D, _check_choices, _conv, conv_norm_relu, pixels_from_logits, pixels_from_residual, residual_block, upsample_norm_relu)
from kperceptual.choices import RESIDUALS, SR_LOSSES


@keras.saving.register_keras_serializable(package="kperceptual")
class SuperResolutionNetwork(keras.Model):
    """The image transformation network for single-image super-resolution by ``scale``:
    RGB [0, 255] of any size in, ``scale`` times larger RGB [0, 255] out.

    Args:
        scale: the upsampling factor, a power of two (paper: 4 and 8).
        filters: filters of every conv but the last (paper: 64).
        num_residual_blocks: residual blocks at the low resolution (paper: 4).
        norm: ``"batch"`` (default, paper) or ``"instance"``.
        upsample: ``"resize"`` (default, nearest + conv) or ``"transpose"`` (paper).
        padding: ``"reflect"`` (default) or ``"zero"``.
        loss: the objective it was trained with, ``"feat"`` or ``"pixel"`` (or ``None``); kept
            so that inference knows whether the paper's histogram matching applies.
        residual: ``"none"`` (default, paper): the output is a scaled tanh of the last conv;
            ``"bicubic"``: global residual learning, the last conv (initialised to zero) is
            added to the bicubic upsampling of the input and the sum clipped to [0, 255], so an
            untrained network already gives bicubic's output.
    """

    def __init__(self, scale=4, filters=64, num_residual_blocks=4, norm="batch",
                 upsample="resize", padding="reflect", loss=None, residual="none", **kwargs):
        scale = int(scale)
        if scale < 2 or scale & (scale - 1):
            raise ValueError(f"scale must be a power of two >= 2, got {scale}")
        if loss not in SR_LOSSES + (None,):
            raise ValueError(f"unknown loss {loss!r}; expected one of {SR_LOSSES}")
        if residual not in RESIDUALS:
            raise ValueError(f"unknown residual {residual!r}; expected one of {RESIDUALS}")
        _check_choices(norm, upsample, padding)
        pixels = keras.Input((None, None, 3), name="pixels")
        x = layers.Rescaling(1 / 127.5, offset=-1.0, name="scale_input")(pixels)
        x = conv_norm_relu(x, filters, 9, 1, norm, padding, "in_conv")
        for i in range(num_residual_blocks):
            x = residual_block(x, filters, norm, padding, f"res{i + 1}")
        for i in range(scale.bit_length() - 1):
            x = upsample_norm_relu(x, filters, upsample, norm, padding, f"up{i + 1}")
        if residual == "bicubic":
            x = _conv(x, 3, 9, 1, padding, "out_conv", dtype="float32",
                      kernel_initializer="zeros")
            outputs = pixels_from_residual(x, BicubicUpsampling2D(scale, name="bicubic")(pixels))
        else:
            x = _conv(x, 3, 9, 1, padding, "out_conv", dtype="float32")
            outputs = pixels_from_logits(x)
        kwargs.setdefault("name", f"super_resolution_x{scale}")
        super().__init__(pixels, outputs, **kwargs)
        self.scale = scale
        self.filters = int(filters)
        self.num_residual_blocks = int(num_residual_blocks)
        self.norm = norm
        self.upsample = upsample
        self.padding = padding
        # Not ``self.loss``: keras.Model.compile sets that attribute.
        self.trained_loss = loss
        self.residual = residual

    def get_config(self):
        return {
            "name": self.name,
            "trainable": self.trainable,
            "scale": self.scale,
            "filters": self.filters,
            "num_residual_blocks": self.num_residual_blocks,
            "norm": self.norm,
            "upsample": self.upsample,
            "padding": self.padding,
            "loss": self.trained_loss,
            "residual": self.residual,
        }

    @classmethod
    def from_config(cls, config):
        return cls(**config)
