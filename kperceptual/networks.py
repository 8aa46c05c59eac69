"""Image transformation networks and their layers. Backend-neutral: ``keras.layers``/``keras.ops``.

The style transformation network of Johnson et al. (2016), supplementary Table 1:

    9x9 conv 32, stride 1 -> 3x3 conv 64, stride 2 -> 3x3 conv 128, stride 2
    -> 5 residual blocks (two 3x3 convs, 128 filters)
    -> two stride-1/2 convs, 64 and 32 filters -> 9x9 conv 3 -> scaled tanh, pixels in [0, 255]

with normalisation + ReLU after every conv but the last; and the super-resolution network of
the same paper (supplementary Table 2): a 9x9 conv with 64 filters and 4 residual blocks at the
low resolution, then log2(f) stride-1/2 convs (2 for x4, 3 for x8) and a 9x9 conv out, pixels in
[0, 255]. Configurable the ways the peers changed
it since: instance normalisation (Ulyanov et al. 2016) instead of batch normalisation,
nearest-neighbour resize + conv instead of transposed convolution (no checkerboard artefacts,
Odena et al. 2016), and reflection instead of zero padding. Any input size works; inputs whose
sides are not a multiple of 4 are reflection-padded and the output cropped back, so the output
always has the input's size.

One network for N styles (Dumoulin, Shlens and Kudlur, *A Learned Representation for Artistic
Style*, ICLR 2017): ``StyleTransferNetwork(num_styles=N)`` shares every convolution and gives
each style its own scale and shift at every normalisation layer
(``ConditionalInstanceNormalization``); it takes the pixels and the style weights (B, N), one-hot
for one style, a convex mix to interpolate styles. ``bind_style`` turns it into the one-style
network of that mix (N = 1 is the paper's network, unchanged), which everything that applies,
tiles or exports a one-input network takes as it is.
"""

from __future__ import annotations

import keras
from keras import layers, ops

import numpy as np

from kperceptual.choices import NORMS, PADDINGS, RESIDUALS, SR_LOSSES, STYLE_HEADS, UPSAMPLES


@keras.saving.register_keras_serializable(package="kperceptual")
class ReflectionPadding2D(layers.Layer):
    """Pads height and width by reflecting the image at its borders (channels-last)."""

    def __init__(self, padding=1, **kwargs):
        super().__init__(**kwargs)
        self.padding = int(padding)

    def call(self, x):
        p = self.padding
        return ops.pad(x, [[0, 0], [p, p], [p, p], [0, 0]], mode="reflect")

    def compute_output_shape(self, shape):
        grow = lambda n: None if n is None else n + 2 * self.padding  # noqa: E731
        return (shape[0], grow(shape[1]), grow(shape[2]), shape[3])

    def get_config(self):
        return {**super().get_config(), "padding": self.padding}


@keras.saving.register_keras_serializable(package="kperceptual")
class PadToMultiple(layers.Layer):
    """Reflection-pads bottom and right so height and width are multiples of ``multiple``."""

    def __init__(self, multiple=4, **kwargs):
        super().__init__(**kwargs)
        self.multiple = int(multiple)

    def call(self, x):
        # A constant reflection pad, then a crop to the next multiple: the same pixels as padding
        # by the exact amount, but the channel count stays static (TFLite needs it to convert
        # with dynamic height and width). Inputs need sides >= ``multiple`` (the network's first
        # 9x9 conv needs more anyway).
        m = self.multiple
        shape = ops.shape(x)
        height = shape[1] + (-shape[1]) % m
        width = shape[2] + (-shape[2]) % m
        x = ops.pad(x, [[0, 0], [0, m - 1], [0, m - 1], [0, 0]], mode="reflect")
        return x[:, :height, :width, :]

    def compute_output_shape(self, shape):
        grow = lambda n: None if n is None else n + (-n) % self.multiple  # noqa: E731
        return (shape[0], grow(shape[1]), grow(shape[2]), shape[3])

    def get_config(self):
        return {**super().get_config(), "multiple": self.multiple}


class _Upsampling2D(layers.Layer):
    """An upsampling by an integer ``factor`` (channels-last): the output shape and config."""

    def __init__(self, factor=2, **kwargs):
        super().__init__(**kwargs)
        self.factor = int(factor)

    def compute_output_shape(self, shape):
        grow = lambda n: None if n is None else n * self.factor  # noqa: E731
        return (shape[0], grow(shape[1]), grow(shape[2]), shape[3])

    def get_config(self):
        return {**super().get_config(), "factor": self.factor}


@keras.saving.register_keras_serializable(package="kperceptual")
class NearestUpsampling2D(_Upsampling2D):
    """Nearest-neighbour upsampling by an integer factor (channels-last).

    Like ``layers.UpSampling2D(interpolation="nearest")``, but by reshape and tile with the
    channel count kept static, so the network converts to TFLite with dynamic height and width.
    """

    def call(self, x):
        f = self.factor
        shape = ops.shape(x)
        batch, height, width, channels = shape[0], shape[1], shape[2], x.shape[-1]
        x = ops.reshape(x, (batch, height, 1, width, 1, channels))
        x = ops.tile(x, (1, 1, f, 1, f, 1))
        return ops.reshape(x, (batch, height * f, width * f, channels))


@keras.saving.register_keras_serializable(package="kperceptual")
class CropToReference(layers.Layer):
    """Crops ``x`` to the height and width of ``reference`` (top-left aligned)."""

    def call(self, inputs):
        x, reference = inputs
        shape = ops.shape(reference)
        return x[:, : shape[1], : shape[2], :]

    def compute_output_shape(self, shapes):
        x_shape, reference_shape = shapes
        return (x_shape[0], reference_shape[1], reference_shape[2], x_shape[3])


def bicubic_weights(factor: int, a: float = -0.5) -> np.ndarray:
    """(factor, 5) weights of bicubic upsampling by ``factor``: output pixel ``factor * i + p``
    is ``sum_k weights[p, k] * input[i + k - 2]`` (half-pixel centres; Keys' cubic with
    ``a = -0.5``, as MATLAB's ``imresize`` and Pillow use)."""
    def cubic(t):
        t = abs(t)
        if t <= 1:
            return (a + 2) * t**3 - (a + 3) * t**2 + 1
        if t < 2:
            return a * t**3 - 5 * a * t**2 + 8 * a * t - 4 * a
        return 0.0

    weights = np.zeros((factor, 5), np.float32)
    for p in range(factor):
        d = (p + 0.5) / factor - 0.5  # where output pixel p falls, from its input pixel
        weights[p] = [cubic(d - k) for k in range(-2, 3)]
    return weights / weights.sum(axis=1, keepdims=True)


@keras.saving.register_keras_serializable(package="kperceptual")
class BicubicUpsampling2D(_Upsampling2D):
    """Bicubic upsampling by an integer ``factor`` (channels-last, float32), by fixed
    convolutions: height, then width, each a 5-tap filter per output phase whose phases are
    interleaved by a reshape. Borders are mirrored (symmetric), as MATLAB's ``imresize`` does.
    The same numbers on every backend, and it converts to TFLite (convolutions, reshapes and
    transposes only). Inputs need sides of at least 2 pixels."""

    def __init__(self, factor=4, **kwargs):
        kwargs.setdefault("dtype", "float32")
        super().__init__(factor, **kwargs)
        w = bicubic_weights(self.factor).T  # (5, factor)
        self._kernel_h = w[:, None, None, :]  # (5, 1, 1, factor)
        self._kernel_w = w[None, :, None, :]  # (1, 5, 1, factor)

    @staticmethod
    def _mirror(x, axis):
        """Symmetric padding by 2 along ``axis`` (1 or 2) by slices and flips."""
        if axis == 1:
            head, tail = x[:, :2], x[:, -2:]
        else:
            head, tail = x[:, :, :2], x[:, :, -2:]
        return ops.concatenate([ops.flip(head, axis), x, ops.flip(tail, axis)], axis=axis)

    def call(self, x):
        f = self.factor
        x = ops.cast(x, "float32")
        shape = ops.shape(x)
        batch, height, width, channels = shape[0], shape[1], shape[2], x.shape[-1]
        # Channels into the batch: (B * C, H, W, 1).
        x = ops.reshape(ops.transpose(x, (0, 3, 1, 2)), (-1, height, width, 1))
        x = ops.conv(self._mirror(x, 1), ops.convert_to_tensor(self._kernel_h), padding="valid")
        x = ops.reshape(ops.transpose(x, (0, 1, 3, 2)), (-1, height * f, width, 1))
        x = ops.conv(self._mirror(x, 2), ops.convert_to_tensor(self._kernel_w), padding="valid")
        x = ops.reshape(x, (batch, channels, height * f, width * f))
        return ops.transpose(x, (0, 2, 3, 1))



@keras.saving.register_keras_serializable(package="kperceptual")
class ConditionalInstanceNormalization(layers.Layer):
    """Instance normalisation with a learned scale and shift per style (Dumoulin et al. 2017).

    Called on ``[x, style_weights]``: ``x`` (B, H, W, C) is normalised by the mean and variance
    of each example's channel over H and W, then scaled by ``style_weights @ gamma`` and shifted
    by ``style_weights @ beta``; ``gamma`` and ``beta`` are (num_styles, C) and
    ``style_weights`` (B, num_styles) (one-hot for one style, a convex mix to interpolate). With
    one-hot weights, example b gets exactly what ``GroupNormalization(groups=-1)`` with row
    ``style[b]`` of gamma and beta gives. Computes in float32 and returns the compute dtype.
    """

    def __init__(self, num_styles, epsilon=1e-5, **kwargs):
        super().__init__(**kwargs)
        self.num_styles = int(num_styles)
        self.epsilon = float(epsilon)
        if self.num_styles < 1:
            raise ValueError(f"num_styles must be at least 1, got {num_styles}")

    def build(self, input_shape):
        x_shape, _ = input_shape
        channels = int(x_shape[-1])
        self.gamma = self.add_weight(shape=(self.num_styles, channels), initializer="ones",
                                     name="gamma")
        self.beta = self.add_weight(shape=(self.num_styles, channels), initializer="zeros",
                                    name="beta")

    def call(self, inputs):
        x, style_weights = inputs
        dtype = x.dtype
        x = ops.cast(x, "float32")
        style_weights = ops.cast(style_weights, "float32")
        mean, variance = ops.moments(x, axes=(1, 2), keepdims=True)
        gamma = ops.matmul(style_weights, ops.cast(self.gamma, "float32"))[:, None, None, :]
        beta = ops.matmul(style_weights, ops.cast(self.beta, "float32"))[:, None, None, :]
        inv = ops.rsqrt(variance + self.epsilon) * gamma
        return ops.cast(x * inv + (beta - mean * inv), dtype)

    def compute_output_shape(self, input_shape):
        return input_shape[0]

    def get_config(self):
        return {**super().get_config(), "num_styles": self.num_styles, "epsilon": self.epsilon}


def _normalization(norm, name, style=None):
    """The normalisation ``norm`` as a function of a tensor; with ``style`` (the style weights
    input of a multi-style network) instance normalisation is conditional on it."""
    if norm == "none":
        return lambda x: x
    if style is not None:
        if norm != "instance":
            raise ValueError(f"a multi-style network needs instance normalisation, not {norm!r}")
        layer = ConditionalInstanceNormalization(style.shape[-1], epsilon=1e-5, name=name)
        return lambda x: layer([x, style])
    if norm == "instance":
        # GroupNormalization with one group per channel is instance normalisation.
        return layers.GroupNormalization(groups=-1, epsilon=1e-5, name=name)
    if norm == "batch":
        return layers.BatchNormalization(epsilon=1e-5, name=name)
    raise ValueError(f"unknown normalisation {norm!r}; expected one of {NORMS}")


def _conv(x, filters, kernel_size, strides, padding, name, dtype=None,
          kernel_initializer="glorot_uniform"):
    if padding == "reflect":
        x = ReflectionPadding2D(kernel_size // 2, name=f"{name}_pad", dtype=dtype)(x)
        return layers.Conv2D(filters, kernel_size, strides, padding="valid", name=name,
                             dtype=dtype, kernel_initializer=kernel_initializer)(x)
    if padding == "zero":
        return layers.Conv2D(filters, kernel_size, strides, padding="same", name=name,
                             dtype=dtype, kernel_initializer=kernel_initializer)(x)
    raise ValueError(f"unknown padding {padding!r}; expected one of {PADDINGS}")


def conv_norm_relu(x, filters, kernel_size, strides, norm, padding, name, style=None):
    x = _conv(x, filters, kernel_size, strides, padding, name)
    x = _normalization(norm, f"{name}_norm", style)(x)
    return layers.ReLU(name=f"{name}_relu")(x)


def residual_block(x, filters, norm, padding, name, style=None):
    """Two 3x3 convs with normalisation, ReLU between them, and an identity shortcut."""
    y = conv_norm_relu(x, filters, 3, 1, norm, padding, f"{name}_conv1", style)
    y = _conv(y, filters, 3, 1, padding, f"{name}_conv2")
    y = _normalization(norm, f"{name}_conv2_norm", style)(y)
    return layers.Add(name=f"{name}_add")([x, y])


def upsample_norm_relu(x, filters, upsample, norm, padding, name, style=None):
    """A stride-1/2 convolution: transposed conv (paper) or nearest resize x2 + conv."""
    if upsample == "transpose":
        x = layers.Conv2DTranspose(filters, 3, strides=2, padding="same", name=name)(x)
    elif upsample == "resize":
        x = NearestUpsampling2D(2, name=f"{name}_resize")(x)
        x = _conv(x, filters, 3, 1, padding, name)
    else:
        raise ValueError(f"unknown upsampling {upsample!r}; expected one of {UPSAMPLES}")
    x = _normalization(norm, f"{name}_norm", style)(x)
    return layers.ReLU(name=f"{name}_relu")(x)


def _check_choices(norm, upsample, padding):
    for value, allowed, what in ((norm, NORMS, "normalisation"),
                                 (upsample, UPSAMPLES, "upsampling"),
                                 (padding, PADDINGS, "padding")):
        if value not in allowed:
            raise ValueError(f"unknown {what} {value!r}; expected one of {allowed}")


def pixels_from_logits(x, name="output"):
    """Scaled tanh: pixels in [0, 255], in float32 even under a mixed-precision policy."""
    x = layers.Activation("tanh", name=f"{name}_tanh", dtype="float32")(x)
    return layers.Rescaling(127.5, offset=127.5, name=f"{name}_pixels", dtype="float32")(x)


@keras.saving.register_keras_serializable(package="kperceptual")
class ClipPixels(layers.Layer):
    """Clips to [0, 255] on the way forward and passes the gradient through unchanged
    (straight-through), so a value outside the range is still pulled back by the loss."""

    def __init__(self, **kwargs):
        kwargs.setdefault("dtype", "float32")
        super().__init__(**kwargs)

    def call(self, x):
        return x + ops.stop_gradient(ops.clip(x, 0.0, 255.0) - x)

    def compute_output_shape(self, shape):
        return shape


def pixels_from_linear(x, name="output"):
    """127.5 x + 127.5 with a straight-through clip to [0, 255]; float32. Where the scaled tanh
    saturates (float32 tanh' is 0 beyond |x| ~ 9) a region stuck at 0 or 255 gets no gradient
    and stays a blob; here every pixel the loss wants moved is moved."""
    x = layers.Rescaling(127.5, offset=127.5, name=f"{name}_linear", dtype="float32")(x)
    return ClipPixels(name=f"{name}_pixels")(x)


def pixels_from_residual(x, base, name="output"):
    """``base`` (pixels) plus the residual ``x`` (in units of 127.5 pixel levels), clipped to
    [0, 255]; float32. A linear head with a straight-through clip: unlike the scaled tanh
    (whose derivative is 0 in float32 beyond |x| ~ 9), nothing saturates in it, so no region can
    get stuck at 0 or 255 with a vanishing gradient."""
    x = layers.Rescaling(127.5, name=f"{name}_residual", dtype="float32")(x)
    x = layers.Add(name=f"{name}_add", dtype="float32")([base, x])
    return ClipPixels(name=f"{name}_pixels")(x)


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


def num_styles(network) -> int:
    """How many styles ``network`` has (1 for every one-input network)."""
    return int(getattr(network, "num_styles", 1) or 1)


def style_names(network) -> tuple[str, ...]:
    """The names of ``network``'s styles; () where it records none (a one-style network)."""
    return tuple(getattr(network, "style_names", None) or ())


def style_weights(names, spec) -> np.ndarray:
    """Style weights (N,) for the styles ``names`` from ``spec``: a name, a style index, a
    weighted mix ``"starry_night:0.7,wave:0.3"`` (weights >= 0, normalised to sum 1; a name
    without a weight counts 1, so ``"a,b"`` is an even mix), or N numbers. Raises ValueError
    with one line (an unknown name lists the network's styles)."""
    names = tuple(names)
    n = len(names)
    if isinstance(spec, (int, np.integer)) and not isinstance(spec, bool):
        if not 0 <= spec < n:
            raise ValueError(f"style index {spec} is not in 0..{n - 1}")
        return np.eye(n, dtype=np.float32)[int(spec)]
    if not isinstance(spec, str):
        weights = np.asarray(spec, np.float32).reshape(-1)
        if weights.shape != (n,):
            raise ValueError(f"expected {n} style weights, got {weights.shape[0]}")
    else:
        weights = np.zeros(n, np.float32)
        for part in filter(None, (p.strip() for p in spec.split(","))):
            name, _, weight = part.rpartition(":") if ":" in part else (part, "", "1")
            name = name.strip()
            if name not in names:
                if name.isdigit() and int(name) < n:
                    name = names[int(name)]
                else:
                    raise ValueError(f"unknown style {name!r}; this network has: "
                                     f"{', '.join(names)}")
            try:
                value = float(weight)
            except ValueError:
                raise ValueError(f"{part!r}: the weight after ':' must be a number") from None
            weights[names.index(name)] += value
    if not np.all(np.isfinite(weights)) or np.any(weights < 0) or weights.sum() <= 0:
        raise ValueError(f"style weights must be >= 0 and not all 0, got {spec!r}")
    return (weights / weights.sum()).astype(np.float32)


def with_precision(network, precision: str):
    """``network`` computing in ``precision`` (``"float32"``, ``"bfloat16"`` or ``"float16"``):
    the same layers and weights (float32 variables) under Keras's mixed policy of that type, the
    output convolution and head in float32 as in training. float32 returns ``network``."""
    if precision == "float32":
        return network
    if precision not in ("bfloat16", "float16"):
        raise ValueError(f"unknown precision {precision!r}; expected float32, bfloat16 or "
                         "float16")
    from kperceptual.precision import dtype_policy

    with dtype_policy(f"mixed_{precision}"):
        copy = network.__class__.from_config(network.get_config())
    copy.set_weights(network.get_weights())
    return copy


def bind_style(network, weights, name=None):
    """The one-style network (``num_styles=1``, the paper's network) of a multi-style network
    at style weights (N,): the same convolutions, and at every normalisation layer the scale and
    shift ``weights @ gamma``, ``weights @ beta`` (what the multi-style network computes for
    those weights). Its weights are copies; a one-style network is returned as it is."""
    if num_styles(network) == 1:
        return network
    weights = np.asarray(weights, np.float32).reshape(-1)
    bound = StyleTransferNetwork(network.filters, network.num_residual_blocks, network.norm,
                                 network.upsample, network.padding,
                                 name=name or network.name)
    source = {layer.name: layer for layer in network.layers}
    for layer in bound.layers:
        if not layer.weights:
            continue
        theirs = source[layer.name]
        if isinstance(theirs, ConditionalInstanceNormalization):
            gamma = weights @ keras.ops.convert_to_numpy(theirs.gamma)
            beta = weights @ keras.ops.convert_to_numpy(theirs.beta)
            layer.set_weights([gamma, beta])
        else:
            layer.set_weights(theirs.get_weights())
    return bound
