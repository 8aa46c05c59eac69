"""The layers and building blocks of the transformation networks (backend-neutral:
``keras.layers`` / ``keras.ops``): padding, upsampling (nearest, bicubic), conditional instance
normalisation, conv-norm-ReLU, residual blocks and the output heads (the paper's scaled tanh, a
linear head clipped with the gradient passed through, and the residual head over bicubic).
"""

from __future__ import annotations

import keras
from keras import layers, ops

import numpy as np

from kperceptual.choices import NORMS, PADDINGS, UPSAMPLES


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
