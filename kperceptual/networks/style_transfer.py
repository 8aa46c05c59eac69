"""The style transformation network of Johnson et al. (2016), supplementary Table 1, and its
multi-style form (Dumoulin et al. 2017): ``StyleTransferNetwork``. Backend-neutral.
"""

from __future__ import annotations

import keras
from keras import layers


from kperceptual.networks.layers import (CropToReference, PadToMultiple, _check_choices, _conv, conv_norm_relu, pixels_from_linear, pixels_from_logits, residual_block, upsample_norm_relu)
from kperceptual.choices import STYLE_HEADS

# Pixels of reflection a style network's input gets on every side when it is applied (and the
# output cropped back): trained on crops, the networks paint a bright speckled band a few pixels
# wide along their input's borders, which a margin moves outside the picture (docs/zoo.md).
BORDER_MARGIN = 32


def border_margin(network) -> int:
    """The margin ``network`` is applied with: ``BORDER_MARGIN`` for style transformation
    networks, 0 for others (super-resolution networks are applied as the paper's protocol
    scores them)."""
    return BORDER_MARGIN if isinstance(network, StyleTransferNetwork) else 0


@keras.saving.register_keras_serializable(package="kperceptual")
class StyleTransferNetwork(keras.Model):
    """The image transformation network for style transfer: RGB [0, 255] in and out, any size.

    Args:
        filters: filters of the three downsampling convs; the upsampling convs mirror the first
            two (paper: 32, 64, 128).
        num_residual_blocks: residual blocks at 1/4 resolution (paper: 5).
        norm: ``"instance"`` (default, as the peers) or ``"batch"`` (paper).
        upsample: ``"resize"`` (default, nearest + conv) or ``"transpose"`` (paper).
        padding: ``"reflect"`` (default) or ``"zero"``.
        num_styles: 1 (default): the paper's network, pixels in, pixels out; N > 1: conditional
            instance normalisation (Dumoulin et al. 2017), inputs ``[pixels, style_weights]``
            with ``style_weights`` (B, N) (see ``style_weights``); needs ``norm="instance"``.
        style_names: the styles' names, one per style (multi-style networks: required, unique).
        head: the output head, ``"linear"`` (default: ``pixels_from_linear``, no region can
            saturate) or ``"tanh"`` (the paper's scaled tanh; configs saved before this option
            existed load as ``"tanh"``).
    """

    def __init__(self, filters=(32, 64, 128), num_residual_blocks=5, norm="instance",
                 upsample="resize", padding="reflect", num_styles=1, style_names=None,
                 head="linear", **kwargs):
        filters = tuple(int(f) for f in filters)
        if len(filters) != 3:
            raise ValueError(f"filters must have 3 entries, got {filters}")
        _check_choices(norm, upsample, padding)
        num_styles = int(num_styles)
        style_names = None if style_names is None else tuple(str(n) for n in style_names)
        if num_styles < 1:
            raise ValueError(f"num_styles must be at least 1, got {num_styles}")
        if num_styles > 1 and style_names is None:
            style_names = tuple(f"style{i}" for i in range(num_styles))
        if style_names is not None and (len(style_names) != num_styles
                                        or len(set(style_names)) != num_styles):
            raise ValueError(f"style_names must be {num_styles} distinct names, got "
                             f"{list(style_names)}")
        if head not in STYLE_HEADS:
            raise ValueError(f"unknown head {head!r}; expected one of {STYLE_HEADS}")
        if num_styles > 1 and norm != "instance":
            raise ValueError(f"a multi-style network needs norm='instance', not {norm!r}")
        pixels = keras.Input((None, None, 3), name="pixels")
        style = keras.Input((num_styles,), name="style_weights") if num_styles > 1 else None
        x = layers.Rescaling(1 / 127.5, offset=-1.0, name="scale_input")(pixels)
        x = PadToMultiple(4, name="pad_to_multiple")(x)
        x = conv_norm_relu(x, filters[0], 9, 1, norm, padding, "down1", style)
        x = conv_norm_relu(x, filters[1], 3, 2, norm, padding, "down2", style)
        x = conv_norm_relu(x, filters[2], 3, 2, norm, padding, "down3", style)
        for i in range(num_residual_blocks):
            x = residual_block(x, filters[2], norm, padding, f"res{i + 1}", style)
        x = upsample_norm_relu(x, filters[1], upsample, norm, padding, "up1", style)
        x = upsample_norm_relu(x, filters[0], upsample, norm, padding, "up2", style)
        # The output conv and head stay float32 under mixed precision: bf16 has ~1 level of
        # resolution at pixel values near 255.
        x = _conv(x, 3, 9, 1, padding, "out_conv", dtype="float32")
        x = pixels_from_logits(x) if head == "tanh" else pixels_from_linear(x)
        outputs = CropToReference(name="crop_to_input", dtype="float32")([x, pixels])
        kwargs.setdefault("name", "style_transfer_network")
        super().__init__(pixels if style is None else [pixels, style], outputs, **kwargs)
        self.filters = filters
        self.num_residual_blocks = int(num_residual_blocks)
        self.norm = norm
        self.upsample = upsample
        self.padding = padding
        self.num_styles = num_styles
        self.style_names = style_names
        self.head = head

    def get_config(self):
        config = {
            "name": self.name,
            "trainable": self.trainable,
            "filters": list(self.filters),
            "num_residual_blocks": self.num_residual_blocks,
            "norm": self.norm,
            "upsample": self.upsample,
            "padding": self.padding,
            "head": self.head,
        }
        # A one-style network's config is what it was before multi-style networks existed.
        if self.num_styles > 1:
            config["num_styles"] = self.num_styles
        if self.style_names is not None:
            config["style_names"] = list(self.style_names)
        return config

    @classmethod
    def from_config(cls, config):
        # Networks saved before the head was an option have the paper's scaled tanh.
        return cls(**{"head": "tanh", **config})
