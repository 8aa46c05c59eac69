"""The transformation network's forward pass for training, computed faster: ``training_forward``.
Backend-neutral (``keras.ops``).

A model that shares the network's layers and variables (gradients reach the network's own
weights; nothing is copied) and computes the same function with two parts of it rewritten:

* **Upsampling convolutions.** Nearest x2 upsampling, reflection padding by 1 and a 3x3
  convolution (the stride-1/2 convolutions) become one 3x3 convolution at the low resolution
  with 4x the output channels, one group per output phase, interleaved by a reshape: reflecting
  the upsampled image by 1 repeats the edge of the low-resolution one, so the low-resolution
  image is padded at its edges, and output pixel (2i + a, 2j + b) sees low-resolution rows
  i - 1, i, i (a = 0: taps 0 and 1 + 2) or i, i, i + 1 (a = 1: taps 0 + 1 and 2), and the same
  along the columns. No full-resolution upsampled or padded copy is made, forward or backward.
* **The output convolution** (a 9x9 convolution to 3 channels at full resolution, float32 in
  the networks): computed by output phases, as a stride-2 convolution with 4x the output
  channels and the kernel shifted by each phase (10x10), interleaved by a reshape; few output
  channels use a fraction of a CPU's vector lanes. Under a mixed-precision policy it computes
  in the network's compute dtype (its reflection padding too), the output cast to float32
  before the bias and the head: the loss network reads the output in that dtype anyway.

Measured on this project's 2-core Xeon with AMX, quiet (256 px, batch 4, mixed bfloat16): a
training step takes 1.09 s against 1.31 s with the network's own layers (``docs/benchmarks.md``,
"Training speed: TensorFlow, this session"); the ten-style network's forward and backward alone,
0.62 s against 0.83 s. Tried and not kept: reflection padding by slices and concatenations
(forward and backward 15% slower than ``MirrorPad`` and its gradient), instance normalisation
applied in bfloat16 (no faster), the upsampling convolution as four 2x2 phases (slower than the
one 3x3 convolution with zeros). In float32 the outputs match the network's to float rounding;
under mixed precision they are as near the float32 network as the network's own mixed-precision
outputs (``tests/networks/test_training_forward.py``). Exported and saved networks are the
network itself: this is only how a training step computes it. Used by
``training.trainer.PerceptualTrainer`` on the TensorFlow backend, where it was measured.
"""

from __future__ import annotations

import keras
from keras import ops

from kperceptual.networks.layers import NearestUpsampling2D, PadToMultiple, ReflectionPadding2D

# Layers that keep the height and width of their (first) input.
SHAPE_KEEPING = ("ReLU", "Activation", "Rescaling", "ClipPixels", "Add", "GroupNormalization",
                 "BatchNormalization", "ConditionalInstanceNormalization", "LayerNormalization")
# Convolutions with at most this many output channels and a kernel of at least PHASE_KERNEL
# are computed by output phases (where the input's sides are known to be even).
PHASE_FILTERS = 4
PHASE_KERNEL = 5


class Computation(keras.layers.Layer):
    """A function of one input (a tensor or a list) as a layer, with no weights of its own."""

    def __init__(self, fn, **kwargs):
        super().__init__(**kwargs)
        self._fn = fn

    def call(self, x):
        return self._fn(x)


def depth_to_space(y, channels: int):
    """(B, H, W, 4 C) -> (B, 2H, 2W, C): channel group 2a + b is output phase (a, b), pixel
    (2i + a, 2j + b) (TensorFlow's ``depth_to_space`` with block 2)."""
    shape = ops.shape(y)
    batch, height, width = shape[0], shape[1], shape[2]
    y = ops.reshape(y, (batch, height, width, 2, 2, channels))
    y = ops.transpose(y, (0, 1, 3, 2, 4, 5))
    return ops.reshape(y, (batch, 2 * height, 2 * width, channels))


def _edge_pad(x):
    x = ops.concatenate([x[:, :1], x, x[:, -1:]], axis=1)
    return ops.concatenate([x[:, :, :1], x, x[:, :, -1:]], axis=2)


def _phase_taps(kernel, axis: int):
    """Along ``axis`` (0: rows, 1: columns) of a kernel with 3 taps there: the taps of output
    phase 0 (i - 1; i, i: 0, 1 + 2) and phase 1 (i, i; i + 1: 0 + 1, 2), each 2 taps long."""
    t = [kernel[i] if axis == 0 else kernel[:, i] for i in range(3)]
    return ops.stack([t[0], t[1] + t[2]], axis=axis), ops.stack([t[0] + t[1], t[2]], axis=axis)


def upsampled_conv_kernel(kernel):
    """(3, 3, C_in, 4 C_out): the 3x3 ``kernel`` (3, 3, C_in, C_out) of a convolution after
    nearest x2 upsampling and reflection padding by 1, as one 3x3 convolution of the
    low-resolution image padded by 1 at its edges; group 2a + b of the output channels is
    output phase (a, b), its 2x2 taps placed at offset (a, b) in the 3x3 window."""
    kernel = ops.convert_to_tensor(kernel)
    phases = []
    for a, rows in enumerate(_phase_taps(kernel, 0)):  # each (2, 3, C_in, C_out)
        for b, taps in enumerate(_phase_taps(rows, 1)):  # each (2, 2, C_in, C_out)
            phases.append(ops.pad(taps, [[a, 1 - a], [b, 1 - b], [0, 0], [0, 0]]))
    return ops.concatenate(phases, axis=-1)


def upsampled_conv(x, kernel, bias=None):
    """Nearest x2 upsampling, reflection padding by 1 and the 3x3 'valid' convolution with
    ``kernel`` (and ``bias``) of ``x``, computed at ``x``'s resolution in ``x``'s dtype."""
    channels = kernel.shape[-1]
    y = ops.conv(_edge_pad(x), ops.cast(upsampled_conv_kernel(kernel), x.dtype),
                 padding="valid")
    if bias is not None:
        y = y + ops.cast(ops.tile(bias, (4,)), y.dtype)
    return depth_to_space(y, channels)


def phase_conv_kernel(kernel):
    """(k + 1, k + 1, C_in, 4 C_out): ``kernel`` (k, k, C_in, C_out) shifted by each output
    phase (a, b), in channel group 2a + b, for a stride-2 convolution."""
    return ops.concatenate([ops.pad(kernel, [[a, 1 - a], [b, 1 - b], [0, 0], [0, 0]])
                            for a in (0, 1) for b in (0, 1)], axis=-1)


def phase_conv(x, kernel):
    """The 'valid' stride-1 convolution (odd kernel size, no bias) of ``x`` (even height and
    width) with ``kernel``, as a stride-2 convolution by output phases, in ``x``'s dtype."""
    y = ops.conv(x, ops.cast(phase_conv_kernel(ops.convert_to_tensor(kernel)), x.dtype),
                 strides=2, padding="valid")
    return depth_to_space(y, kernel.shape[-1])


def _plain_conv(layer, kernel_size=None) -> bool:
    """A linear 2-D convolution, stride 1, 'valid', no dilation or groups, channels-last."""
    return (type(layer) is keras.layers.Conv2D and layer.strides == (1, 1)
            and layer.padding == "valid" and layer.dilation_rate == (1, 1)
            and layer.groups == 1 and layer.data_format == "channels_last"
            and getattr(layer.activation, "__name__", "") == "linear"
            and (kernel_size is None or layer.kernel_size == (kernel_size, kernel_size)))


def _is_float32(layer) -> bool:
    return keras.backend.standardize_dtype(layer.compute_dtype) == "float32"


class GraphNotes:
    """What a rewrite of a network's graph follows about its tensors while it clones the
    network layer by layer (here and in ``serving.tf_rewrite``): which are a nearest x2
    upsampling of a low-resolution tensor, then maybe reflection-padded by 1 (``low``: id ->
    (the source, "upsampled" or "padded")), and which have even height and width at every
    input size (``even``: ids)."""

    def __init__(self):
        self.low = {}
        self.even = set()
        self._keep = []  # the noted tensors, so their ids stay theirs

    def note(self, y, is_even=False, source=None):
        self._keep.append(y)
        if is_even:
            self.even.add(id(y))
        if source is not None:
            self.low[id(y)] = source
        return y

    def kind(self, x):
        """"upsampled", "padded" or None: what ``x`` is of a low-resolution tensor."""
        return self.low.get(id(x), (None, None))[1]

    def called(self, layer, y, first):
        """``y``, the output of ``layer`` called as it is on ``first`` (its first input),
        noted even where the layer keeps an even input even or makes it so."""
        if isinstance(layer, PadToMultiple):
            return self.note(y, layer.multiple % 2 == 0)
        odd_conv = (type(layer) is keras.layers.Conv2D and layer.strides == (1, 1)
                    and layer.padding == "valid" and layer.dilation_rate == (1, 1)
                    and layer.kernel_size[0] % 2 == 1 and layer.kernel_size[1] % 2 == 1)
        if odd_conv or type(layer).__name__ in SHAPE_KEEPING:
            return self.note(y, id(first) in self.even)
        return y


def training_forward(network: keras.Model) -> keras.Model:
    """``network`` (one of ``networks``' transformation networks) as a model that shares its
    layers and variables and computes its upsampling convolutions and few-channel output
    convolution faster (see the module's doc); other layers are called as they are."""
    notes = GraphNotes()
    note, even = notes.note, notes.even

    def call(layer, *args, **kwargs):
        x = args[0] if args else None
        first = x[0] if isinstance(x, (list, tuple)) else x
        name = layer.name
        if isinstance(layer, NearestUpsampling2D) and layer.factor == 2:
            # Left for the convolution after it; an identity in the graph meanwhile.
            y = Computation(lambda t: t, name=name, dtype=first.dtype)(x)
            return note(y, False, (x, "upsampled"))
        if (isinstance(layer, ReflectionPadding2D) and layer.padding == 1
                and notes.kind(x) == "upsampled"):
            y = Computation(lambda t: t, name=name, dtype=first.dtype)(x)
            return note(y, False, (notes.low[id(x)][0], "padded"))
        if _plain_conv(layer, 3) and notes.kind(x) == "padded":
            conv = layer
            y = Computation(lambda t: upsampled_conv(t, conv.kernel, conv.bias
                                                      if conv.use_bias else None),
                             name=name, dtype=layer.dtype_policy)(notes.low[id(x)][0])
            return note(y, True)
        if isinstance(layer, ReflectionPadding2D) and id(x) in even:
            # In the input's dtype (a float32 padding after half-precision layers included).
            pad = layer
            y = Computation(pad.call, name=name, dtype=first.dtype)(x)
            return note(y, True)
        if (_plain_conv(layer) and layer.filters <= PHASE_FILTERS and id(x) in even
                and layer.kernel_size[0] == layer.kernel_size[1] >= PHASE_KERNEL
                and layer.kernel_size[0] % 2 == 1):
            conv = layer
            out_dtype = layer.compute_dtype

            def fn(t):
                y = ops.cast(phase_conv(t, conv.kernel), out_dtype)
                return y + ops.cast(conv.bias, out_dtype) if conv.use_bias else y
            # The layer computes in its input's dtype (no autocast to float32).
            y = Computation(fn, name=name, dtype=first.dtype)(x)
            return note(y, True)
        return notes.called(layer, layer(*args, **kwargs), first)

    return keras.models.clone_model(network, clone_function=lambda layer: layer,
                                    call_function=call)
