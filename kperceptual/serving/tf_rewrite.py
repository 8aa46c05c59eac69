"""A transformation network rewritten in faster ops, the same outputs up to float rounding
(TensorFlow-only): ``for_xnnpack`` in ops LiteRT's XNNPACK delegate takes, for TFLite conversion
(``tf_tflite.convert_tflite`` applies it); ``for_tensorflow`` for TensorFlow's own CPU kernels,
what inference runs (``tensorflow_forward``, used by ``inference.loading.keras_forward``).

**for_tensorflow.** Profiled at 640x480 (the video size, with the border margin) in bfloat16 on
this project's 2-core Xeon, the Keras layers spent 39% of the time in instance normalisation,
20% in reflection padding, 9% in ReLU and 4% in nearest upsampling, 25% in convolutions. Here:
each example's instance normalisation is one ``FusedBatchNormV3`` in training mode (batch
statistics of a batch of one example are that example's statistics over height and width;
oneDNN's kernel, with the ReLU that follows fused into it), reflection padding is slices and
concatenations, and the upsampling convolutions and the output convolution are computed as
below, in the network's compute dtype (bfloat16 too). ``docs/benchmarks.md`` has the times.

**for_xnnpack.**

LiteRT runs a model's ops on CPUs with the XNNPACK delegate where it takes them and with
TFLite's own kernels (single-threaded, each partition's tensors handed back and forth) where it
does not. Converted as the Keras layers are written, the style network left these to the
fallback kernels and split the graph into 37 delegate partitions:

* reflection padding (``networks.ReflectionPadding2D``, ``ops.pad(mode="reflect")``):
  MIRROR_PAD, which XNNPACK has no kernel for. Here: slices and concatenations.
* instance normalisation (``GroupNormalization`` with a group per channel): its reshape into
  groups has a shape computed at run time (SHAPE, STRIDED_SLICE, PACK, RESHAPE). Here: means
  over height and width of the tensor as it is, the same arithmetic.
* nearest upsampling (``networks.NearestUpsampling2D``): reshapes and TILE with run-time
  shapes. Here: the input repeated along the channels and DEPTH_TO_SPACE; and where it feeds a
  reflection padding by 1 and a 3x3 convolution (the network's stride-1/2 convolutions), the
  three as four 2x2 convolutions at the low resolution, one per output phase, interleaved by
  DEPTH_TO_SPACE: the same output (reflecting the upsampled image by 1 repeats the edge of the
  low-resolution one), 4/9 of the multiply-adds and no full-resolution copies.

Besides, XNNPACK's convolution with few output channels (the 9x9 convolution to 3 channels at
the end) uses a fraction of its vector lanes: 1.8x TensorFlow's time for it. On an input of
even sides it is computed here by output phases: a stride-2 convolution with 4x the output
channels (the kernel shifted by each phase, 10x10: 1.23x the multiply-adds) and
DEPTH_TO_SPACE, 3x faster with LiteRT on this project's 2-core Xeon. Whether a tensor's sides
are even at every input size is followed through the graph from ``PadToMultiple`` and the
upsamplings.

The outputs match the Keras network's up to float32 rounding (``tests/serving/test_xnnpack.py``).
The files grow by the larger kernels (float16: 3.4 to 3.7 MB).
"""

from __future__ import annotations

import keras
import numpy as np
import tensorflow as tf

from kperceptual.networks.fast_forward import (PHASE_FILTERS as PHASE_CONV_FILTERS,  # noqa: F401
                                             PHASE_KERNEL as PHASE_CONV_KERNEL, Computation,
                                             GraphNotes)

# XNNPACK's CONCATENATION takes a few inputs (9 were left to the fallback kernel; 4 are taken).
MAX_CONCAT = 4
# Convolutions with at most PHASE_CONV_FILTERS output channels and a kernel of at least
# PHASE_CONV_KERNEL are computed by output phases (where the input's sides are known to be even).


def concatenate(parts, axis):
    """``parts`` concatenated along ``axis``, in concatenations of at most ``MAX_CONCAT``."""
    while len(parts) > 1:
        groups = [parts[i:i + MAX_CONCAT] for i in range(0, len(parts), MAX_CONCAT)]
        parts = [g[0] if len(g) == 1 else tf.concat(g, axis) for g in groups]
    return parts[0]


def _rows(x, axis, start, stop):
    index = [slice(None)] * 4
    index[axis] = slice(start, stop)
    return x[tuple(index)]


def reflect_pad(x, padding: int):
    """Reflection padding of height and width by ``padding`` (MIRROR_PAD, REFLECT) as slices
    and concatenations."""
    for axis in (1, 2):
        head = [_rows(x, axis, i, i + 1) for i in range(padding, 0, -1)]
        tail = [_rows(x, axis, -i - 1, -i) for i in range(1, padding + 1)]
        x = concatenate([concatenate(head, axis), x, concatenate(tail, axis)], axis)
    return x


def edge_pad(x):
    """Height and width padded by 1, repeating the edge."""
    for axis in (1, 2):
        x = tf.concat([_rows(x, axis, 0, 1), x, _rows(x, axis, -1, None)], axis)
    return x


def instance_norm(x, gamma, beta, epsilon):
    """Each example's channels normalised over height and width, scaled by ``gamma`` and
    shifted by ``beta`` ((C,) or (B, 1, 1, C)); in float32, as the Keras layers compute it."""
    dtype = x.dtype
    x = tf.cast(x, tf.float32)
    mean = tf.reduce_mean(x, axis=(1, 2), keepdims=True)
    centred = x - mean  # not SQUARED_DIFFERENCE: it has no int16 kernel (int16x8 files)
    variance = tf.reduce_mean(centred * centred, axis=(1, 2), keepdims=True)
    inv = tf.math.rsqrt(variance + epsilon) * gamma
    return tf.cast(x * inv + (beta - mean * inv), dtype)


def instance_norm_fused(x, gamma, beta, epsilon, relu=False):
    """``instance_norm`` (then a ReLU where ``relu``), each example by a ``FusedBatchNormV3`` in
    training mode: the statistics of a batch of one example are that example's, computed in
    float32 whatever ``x``'s dtype; ``gamma`` and ``beta`` are (C,) or (B, 1, 1, C)."""
    channels = x.shape[-1]
    batch = tf.shape(x)[0]

    def rows(v):
        return tf.broadcast_to(tf.reshape(tf.cast(v, tf.float32), [-1, channels]),
                               [batch, channels])

    def one(args):
        example, scale, offset = args
        y = tf.raw_ops.FusedBatchNormV3(
            x=example[None], scale=scale, offset=offset, mean=tf.zeros([0]),
            variance=tf.zeros([0]), epsilon=epsilon, is_training=True)[0][0]
        return tf.nn.relu(y) if relu else y

    return tf.map_fn(one, (x, rows(gamma), rows(beta)),
                     fn_output_signature=tf.TensorSpec(x.shape[1:], x.dtype))


def nearest_upsample(x, factor: int):
    """Nearest-neighbour upsampling: the channels repeated ``factor``**2 times, DEPTH_TO_SPACE."""
    return tf.nn.depth_to_space(concatenate([x] * factor ** 2, -1), factor)


def upsampled_conv_kernels(kernel: np.ndarray) -> np.ndarray:
    """(2, 2, C_in, 4 C_out) kernels of nearest x2 upsampling, reflection padding by 1 and the
    3x3 ``kernel`` (3, 3, C_in, C_out), on the low-resolution image padded by 1 at its edges:
    output phase (a, b) (output pixel (2i + a, 2j + b)) is the 2x2 convolution of that image at
    offset (a, b) with channels ``(2a + b) C_out`` on. Along one axis, phase 0 sees input rows
    i - 1, i, i (taps 0, 1 + 2), phase 1 rows i, i, i + 1 (taps 0 + 1, 2)."""
    taps = {0: ((0,), (1, 2)), 1: ((0, 1), (2,))}
    k = kernel.astype(np.float64)
    c_in, c_out = k.shape[2:]
    out = np.zeros((2, 2, c_in, 2, 2, c_out))
    for a in (0, 1):
        for b in (0, 1):
            for u, rows in enumerate(taps[a]):
                for v, cols in enumerate(taps[b]):
                    out[u, v, :, a, b] = k[list(rows)][:, list(cols)].sum(axis=(0, 1))
    return out.reshape(2, 2, c_in, 4 * c_out).astype(np.float32)


def upsampled_conv(x, kernels):
    """Nearest x2 upsampling, reflection padding by 1 and a 3x3 'valid' convolution (without
    bias) of ``x``, with ``kernels`` from ``upsampled_conv_kernels``."""
    c_out = kernels.shape[-1] // 4
    y = tf.nn.conv2d(edge_pad(x), tf.cast(kernels, x.dtype), 1, "VALID")  # (H + 1, W + 1, 4 C_out)
    phases = []
    for a in (0, 1):
        for b in (0, 1):
            p = y[:, a:, b:, (2 * a + b) * c_out:(2 * a + b + 1) * c_out]
            p = p[:, :-1] if a == 0 else p
            phases.append(p[:, :, :-1] if b == 0 else p)
    return tf.nn.depth_to_space(concatenate(phases, -1), 2)


def phase_kernel(kernel: np.ndarray) -> np.ndarray:
    """The (k + 1, k + 1, C_in, 4 C_out) kernel of a stride-2 convolution computing the 'valid'
    stride-1 convolution with ``kernel`` (k, k, C_in, C_out) in output phases: phase (a, b)
    (output pixel (2i + a, 2j + b)) is ``kernel`` shifted by (a, b), in channels
    ``(2a + b) C_out`` on, as DEPTH_TO_SPACE reads them."""
    k, _, c_in, c_out = kernel.shape
    out = np.zeros((k + 1, k + 1, c_in, 2, 2, c_out), np.float32)
    for a in (0, 1):
        for b in (0, 1):
            out[a:a + k, b:b + k, :, a, b] = kernel
    return out.reshape(k + 1, k + 1, c_in, 4 * c_out)


def phase_conv(x, kernel):
    """The 'valid' stride-1 convolution (odd kernel size, no bias) of ``x`` (even height and
    width) as a stride-2 convolution with ``kernel`` from ``phase_kernel`` and DEPTH_TO_SPACE."""
    return tf.nn.depth_to_space(tf.nn.conv2d(x, tf.cast(kernel, x.dtype), 2, "VALID"), 2)


def _numpy(variable) -> np.ndarray:
    return np.asarray(keras.ops.convert_to_numpy(variable), np.float32)


def _is_float32(layer) -> bool:
    return keras.backend.standardize_dtype(layer.compute_dtype) == "float32"


def _plain_conv(layer, kernel_size=None, any_dtype=False) -> bool:
    """A 2-D convolution (float32 unless ``any_dtype``), stride 1, 'valid', no dilation or
    groups, channels-last."""
    return (type(layer) is keras.layers.Conv2D and (any_dtype or _is_float32(layer))
            and layer.strides == (1, 1) and layer.padding == "valid"
            and layer.dilation_rate == (1, 1) and layer.groups == 1
            and layer.data_format == "channels_last"
            and (kernel_size is None or layer.kernel_size == (kernel_size, kernel_size)))


def _conv_fn(layer, conv, kernel):
    """``conv(x, kernel)`` plus ``layer``'s bias, through its activation."""
    bias = _numpy(layer.bias) if layer.use_bias else None
    activation = layer.activation

    def fn(x):
        y = conv(x, kernel)
        return activation(y if bias is None else y + tf.cast(bias, y.dtype))
    return fn


def _is_instance_norm(layer, x) -> bool:
    from kperceptual import networks

    if isinstance(layer, networks.ConditionalInstanceNormalization):
        return True
    return (isinstance(layer, keras.layers.GroupNormalization) and layer.axis in (-1, 3)
            and len(x.shape) == 4 and layer.groups in (-1, x.shape[-1]))


def _instance_norm_fn(layer, norm=instance_norm):
    """``layer`` as ``norm(x, gamma, beta, epsilon)``."""
    from kperceptual import networks

    epsilon = layer.epsilon
    if isinstance(layer, networks.ConditionalInstanceNormalization):
        gamma, beta = _numpy(layer.gamma), _numpy(layer.beta)

        def conditional(inputs):
            x, style = inputs
            style = tf.cast(style, tf.float32)
            return norm(x, tf.matmul(style, gamma)[:, None, None, :],
                        tf.matmul(style, beta)[:, None, None, :], epsilon)
        return conditional
    channels = int(layer.gamma.shape[-1] if layer.scale else layer.beta.shape[-1])
    gamma = _numpy(layer.gamma) if layer.scale else np.ones(channels, np.float32)
    beta = _numpy(layer.beta) if layer.center else np.zeros(channels, np.float32)
    return lambda x: norm(x, gamma, beta, epsilon)


def _is_relu(layer) -> bool:
    """A plain ReLU layer (no cap, slope or threshold) or ``Activation("relu")``."""
    if type(layer) is keras.layers.ReLU:
        return (layer.max_value is None and not layer.negative_slope
                and not layer.threshold)
    return (type(layer) is keras.layers.Activation
            and getattr(layer.activation, "__name__", "") == "relu")


def for_xnnpack(network: keras.Model) -> keras.Model:
    """``network`` with the layers LiteRT's XNNPACK delegate would not take written in ops it
    takes (see the module's doc); the other layers and their weights are ``network``'s own.
    For conversion only: the rewritten layers hold copies of the weights as constants."""
    return _rewrite(network, "xnnpack")


def for_tensorflow(network: keras.Model) -> keras.Model:
    """``network`` with its instance normalisations (and the ReLUs after them), reflection
    paddings, upsampling convolutions and few-channel output convolution written in ops that
    TensorFlow's CPU kernels run faster (see the module's doc), in the network's own compute
    dtype. The rewritten layers hold copies of the weights as constants."""
    return _rewrite(network, "tensorflow")


def tensorflow_forward(network: keras.Model):
    """``for_tensorflow(network)`` as one compiled function of a float32 batch (B, H, W, C)
    -> numpy (any batch, height and width without retracing)."""
    rewritten = for_tensorflow(network)
    channels = network.inputs[0].shape[-1]

    @tf.function(input_signature=[tf.TensorSpec([None, None, None, channels], tf.float32)])
    def forward(x):
        return rewritten(x, training=False)

    return lambda x: forward(tf.convert_to_tensor(np.asarray(x, np.float32))).numpy()


def _rewrite(network: keras.Model, target: str) -> keras.Model:
    """``network`` rewritten for ``target`` ("xnnpack" or "tensorflow"), as cloned layer by
    layer; layers it does not know are called as they are."""
    from kperceptual import networks

    notes = GraphNotes()
    note, even, low = notes.note, notes.even, notes.low
    normed = {}  # id(tensor) -> (the instance norm layer, its input): "tensorflow" only
    fast = target == "tensorflow"

    def call(layer, *args, **kwargs):
        x = args[0] if args else None
        first = x[0] if isinstance(x, (list, tuple)) else x
        name, policy = layer.name, layer.dtype_policy
        # "tensorflow": a float32 padding or output convolution after half-precision layers
        # (the output of a mixed-precision network) computes in its input's dtype.
        own = policy if not fast or first is None else first.dtype
        if isinstance(layer, networks.ReflectionPadding2D):
            y = Computation(lambda t: reflect_pad(t, layer.padding), name=name,
                             dtype=own)(x)
            upsampled = low.get(id(x))
            return note(y, id(x) in even,
                        (upsampled[0], "padded") if upsampled and upsampled[1] == "upsampled"
                        and layer.padding == 1 else None)
        if isinstance(layer, networks.NearestUpsampling2D) and (fast or _is_float32(layer)):
            y = Computation(lambda t: nearest_upsample(t, layer.factor), name=name,
                             dtype=policy)(x)
            return note(y, layer.factor % 2 == 0,
                        (x, "upsampled") if layer.factor == 2 else None)
        if x is not None and _is_instance_norm(layer, first):
            norm = instance_norm_fused if fast else instance_norm
            y = Computation(_instance_norm_fn(layer, norm), name=name, dtype=policy)(x)
            if fast:
                normed[id(y)] = (layer, x)
            return note(y, id(first) in even)
        if fast and _is_relu(layer) and id(x) in normed:
            norm_layer, norm_input = normed[id(x)]
            fn = _instance_norm_fn(norm_layer, lambda *a: instance_norm_fused(*a, relu=True))
            y = Computation(fn, name=name, dtype=norm_layer.dtype_policy)(norm_input)
            return note(y, id(x) in even)
        if _plain_conv(layer, 3, fast) and low.get(id(x), (None, None))[1] == "padded":
            fn = _conv_fn(layer, upsampled_conv, upsampled_conv_kernels(_numpy(layer.kernel)))
            y = Computation(fn, name=name, dtype=policy)(low[id(x)][0])
            return note(y, True)
        if (_plain_conv(layer, any_dtype=fast) and layer.filters <= PHASE_CONV_FILTERS
                and layer.kernel_size[0] == layer.kernel_size[1] >= PHASE_CONV_KERNEL
                and layer.kernel_size[0] % 2 == 1 and id(x) in even):
            fn = _conv_fn(layer, phase_conv, phase_kernel(_numpy(layer.kernel)))
            y = Computation(fn, name=name, dtype=own)(x)
            return note(y, True)
        return notes.called(layer, layer(*args, **kwargs), first)

    return keras.models.clone_model(network, clone_function=lambda layer: layer,
                                    call_function=call)
