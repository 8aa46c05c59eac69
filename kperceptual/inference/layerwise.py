"""Layer-by-layer whole-image execution: exact whole-image normalisation at about the arithmetic
of one untiled pass, for images that do not fit in memory whole.

``tiling.Tiler`` runs the *whole* network window by window and, to give every window the
whole-image statistics of each instance-normalisation layer, recomputes the network up to that
layer once per layer (16 passes, 7.4x the arithmetic of one pass, for the default network). Here
the network is instead run one stage at a time over the whole image:

* The network's functional graph is walked (``LayerwiseNetwork``). A tensor is *stored* (held
  whole, for the full image) when a whole-image normalisation needs its statistics (the input of
  a ``GroupNormalization`` or ``ConditionalInstanceNormalization``), when more than one layer
  reads it (a residual block's input, kept for the shortcut), or when it is the network's
  output. Every other layer (ReLU, rescaling, a normalisation whose statistics are known,
  padding, nearest upsampling, the residual ``Add``, the output head) is computed on the way,
  inside the *stage* that produces the next stored tensor (a tensor several layers read that is
  only pixel-wise layers on one stored tensor, such as the first residual block's input, is
  recomputed by each instead). For the style network a stage is one convolution with the layers
  between it and the stored tensor it reads: 20 stages (the 15 convolutions that feed a
  normalisation; 4 residual block inputs, each the block's shortcut plus its normalised second
  convolution; the output: the last normalisation, upsampling convolution, output convolution
  and head).
* A stage runs tile by tile over its output. A tile reads a window of each stored input: the
  tile's part plus a margin covering the receptive field of the stage's layers (1 to 4 pixels:
  one 3x3 or 9x9 convolution, not the whole network's 60). The stage's layers (the network's own
  Keras layers, so the same padding, dtype policy and arithmetic) run on the window; where a
  window side is the image border, the layers pad it exactly as they pad the whole image
  (reflection, zeros, or the bicubic head's mirror), and where it is inside the image the margin
  supplies real pixels and the rows the layers computed from their own padding are cropped away.
  Window starts are multiples of the stage's stride, so strided convolutions sample the same
  grid as the untiled run.
* While a stored tensor is produced, the per-channel count, mean and sum of squared deviations
  of the pixels each tile owns are accumulated in float64 (each tile gives, per row and channel,
  float32 sums of its values and of their squared deviations from a shift near its mean, so the
  squares do not cancel; rows and tiles are merged in float64, Chan et al.), and each
  normalisation applies the whole image's statistics (pooled per group for ``groups`` > 1) with
  its own scale and shift (a conditional one's at the given style weights).
* Stored tensors live in memory while they fit the memory left after the image buffers and one
  tile's working set, else on disk (``DiskArray``: a file in a temporary folder, read and written
  by rows with ``pread``/``pwrite``, so nothing of it is resident; the folder is removed when the
  run ends, also on an error). A stored tensor is dropped (its file deleted) after the last stage
  that reads it. Two threads each read their tiles' windows, run the stage on them and write
  the tiles, so that one moves data while the other computes.

Arithmetic: one pass, plus each tile's margin (``LayerPlan.arithmetic``: multiply-adds of the
convolutions actually run over those of one untiled pass; 1.009x for the default network on an
8000x6000 image within a 4 GiB budget, against 10-11x for ``Tiler``'s 16 passes over overlapping
windows, ``windows_arithmetic``). The cost moved elsewhere is data movement: each stored tensor
is written once and read once or twice, through the page cache or the disk.

Layers walked: the network's inputs (the pixels; a multi-style network's style weights, fixed
by ``style_weights``), ``Conv2D`` (``valid`` after a padding layer that gives back what it
takes, or ``same``), ``Conv2DTranspose`` (``same``), ``ReflectionPadding2D``, ``ZeroPadding2D``,
``NearestUpsampling2D`` and ``UpSampling2D`` (nearest), ``BicubicUpsampling2D``,
``PadToMultiple`` (on the pixels: the image is padded first, as ``Tiler`` does),
``CropToReference`` (the output, cropped at the end), ``GroupNormalization``,
``ConditionalInstanceNormalization``, and pointwise layers (``Rescaling``, ``ReLU``,
``Activation``, ``Add`` and its kin, ``BatchNormalization`` in inference, ``ClipPixels``...).
Anything else raises ``NotWalkable`` with the reason, and callers fall back to ``Tiler``.
"""

from __future__ import annotations

import dataclasses
import math
import os
import shutil
import tempfile
import time
from fractions import Fraction

import numpy as np

# Tile sides (output pixels of a stage) considered.
MAX_TILE = 2048
MIN_TILE = 32
# Tiles' working sets: at most this share of the room the run has, and at most WORK_CAP; shared
# by STREAMS tiles run at once (threads that each read, compute and write their tiles).
WORK_FRACTION = 0.5
WORK_CAP = 512 << 20
STREAMS = 2
# A tile's working set, per output pixel: the sum of the stage's tensors (windows, every layer's
# output, the cropped output) times this, for the framework's temporaries.
WORK_SAFETY = 1.5
# Memory a run needs beyond tiles and stored tensors: the stages' compiled functions (about
# 1 MiB each, measured) and the second thread's allocations; set aside before planning.
RUN_BYTES = 32 << 20
STAGE_BYTES = 2 << 20
# Free disk needed in the temporary folder: the disk-backed tensors' peak times this.
DISK_MARGIN = 1.1

# Layers computed pixel by pixel (BatchNormalization and the noise layers as in inference).
POINTWISE = ("Rescaling", "ReLU", "Activation", "LeakyReLU", "ELU", "Add",
             "Subtract", "Multiply", "Average", "Maximum", "Minimum", "BatchNormalization",
             "ClipPixels", "Dropout", "GaussianNoise", "GaussianDropout", "Identity")


class NotWalkable(ValueError):
    """The layer-by-layer executor cannot run this network (or this image size); the message
    says why in one line."""


class NotEnoughRoom(ValueError):
    """The memory budget (``what`` = "memory") or the temporary folder's free space ("disk") is
    too small; the message says how much is needed."""

    def __init__(self, message, what):
        super().__init__(message)
        self.what = what


def _lcm(a: int, b: int) -> int:
    return a * b // math.gcd(a, b)


def _round_up(n: int, multiple: int) -> int:
    return multiple * -(-n // multiple)


def _numpy_dtype(name: str):
    if name == "bfloat16":
        import ml_dtypes

        return np.dtype(ml_dtypes.bfloat16)
    return np.dtype(name)


def _pair(value) -> tuple[int, int]:
    if isinstance(value, (tuple, list)):
        return int(value[0]), int(value[-1])
    return int(value), int(value)


@dataclasses.dataclass
class _Op:
    """One node of the network's graph: ``layer`` called on the values ``inputs`` (ids; the
    spatial ones), giving the value ``output``."""

    layer: object
    node: object
    inputs: list
    output: int
    kind: str  # input | pointwise | norm | spatial | identity
    fixed: object = None  # a norm's FixedNormalization


@dataclasses.dataclass
class _Path:
    """How a stage's tensor depends on one of its stored inputs: ``scale`` input pixels per
    pixel of this tensor, ``radius`` (input pixels) of the receptive field so far, ``align``:
    window starts on that input must be multiples of it (strides)."""

    scale: Fraction
    radius: Fraction
    align: int


class FixedNormalization:
    """A normalisation layer with whole-image statistics set from outside: ``x * inv +
    offset`` in float32 (as ``GroupNormalization`` computes it), returning the source layer's
    output dtype. ``gamma`` and ``beta`` are the source layer's (a conditional one's at the
    given style weights)."""

    def __init__(self, name, gamma, beta, epsilon, groups, output_dtype):
        import keras

        self.name, self.epsilon, self.groups = name, float(epsilon), int(groups)
        self.gamma = np.asarray(gamma, np.float64)
        self.beta = np.asarray(beta, np.float64)
        self.output_dtype = output_dtype
        channels = self.gamma.shape[0]
        self.inv = keras.Variable(np.ones(channels, np.float32), dtype="float32",
                                  trainable=False, name=f"{name}_inv")
        self.offset = keras.Variable(np.zeros(channels, np.float32), dtype="float32",
                                     trainable=False, name=f"{name}_offset")

    def set_statistics(self, moments):
        """From a ``tiling._Moments`` of the layer's input over the whole image."""
        mean, variance = moments.group(self.groups)
        inv = self.gamma / np.sqrt(variance + self.epsilon)
        self.inv.assign(inv.astype(np.float32))
        self.offset.assign((self.beta - mean * inv).astype(np.float32))

    def __call__(self, x):
        from keras import ops

        y = ops.cast(x, "float32") * ops.convert_to_tensor(self.inv) + ops.convert_to_tensor(
            self.offset)
        return ops.cast(y, self.output_dtype)


def _fixed_normalization(layer, node, style_weights):
    from keras import layers, ops

    from kperceptual import networks

    x = node.input_tensors[0]
    channels = int(x.shape[-1])
    output_dtype = node.output_tensors[0].dtype
    if isinstance(layer, networks.ConditionalInstanceNormalization):
        if style_weights is None:
            raise NotWalkable(f"{layer.name}: a multi-style network needs its style weights "
                              "(bind it to a style first, or pass style_weights)")
        w = np.asarray(style_weights, np.float64).reshape(-1)
        gamma = w @ np.asarray(ops.convert_to_numpy(layer.gamma), np.float64)
        beta = w @ np.asarray(ops.convert_to_numpy(layer.beta), np.float64)
        return FixedNormalization(layer.name, gamma, beta, layer.epsilon, channels, output_dtype)
    assert isinstance(layer, layers.GroupNormalization)
    if layer.axis not in (-1, 3):
        raise NotWalkable(f"{layer.name}: GroupNormalization over axis {layer.axis} (only the "
                          "channels, last, are walked)")
    groups = channels if layer.groups == -1 else layer.groups
    gamma = (ops.convert_to_numpy(layer.gamma) if layer.scale else np.ones(channels))
    beta = (ops.convert_to_numpy(layer.beta) if layer.center else np.zeros(channels))
    return FixedNormalization(layer.name, gamma, beta, layer.epsilon, groups, output_dtype)


def _classify(layer) -> str:
    """What the executor does with ``layer``: input, norm, identity, spatial or pointwise;
    NotWalkable for a layer it does not know (or a configuration of one)."""
    from keras import layers

    from kperceptual import networks

    name = type(layer).__name__
    if isinstance(layer, layers.InputLayer):
        return "input"
    if isinstance(layer, (layers.GroupNormalization, networks.ConditionalInstanceNormalization)):
        return "norm"
    if isinstance(layer, (networks.PadToMultiple, networks.CropToReference)):
        return "identity"
    if isinstance(layer, layers.Conv2DTranspose):
        if layer.padding != "same" or layer.output_padding is not None or \
                layer.data_format != "channels_last" or _pair(layer.dilation_rate) != (1, 1):
            raise NotWalkable(f"{layer.name}: Conv2DTranspose other than 'same', channels-last, "
                              "undilated")
        return "spatial"
    if isinstance(layer, layers.Conv2D):
        if layer.data_format != "channels_last" or layer.groups != 1:
            raise NotWalkable(f"{layer.name}: a grouped or channels-first Conv2D")
        if len(set(_pair(layer.strides))) != 1 or len(set(_pair(layer.dilation_rate))) != 1:
            raise NotWalkable(f"{layer.name}: unequal strides or dilations along the two axes")
        return "spatial"
    if isinstance(layer, (networks.ReflectionPadding2D, networks.NearestUpsampling2D,
                          networks.BicubicUpsampling2D)):
        return "spatial"
    if isinstance(layer, layers.ZeroPadding2D):
        (top, bottom), (left, right) = layer.padding
        if not top == bottom == left == right or layer.data_format != "channels_last":
            raise NotWalkable(f"{layer.name}: ZeroPadding2D other than the same on every side")
        return "spatial"
    if isinstance(layer, layers.UpSampling2D):
        if layer.interpolation != "nearest" or len(set(_pair(layer.size))) != 1 or \
                layer.data_format != "channels_last":
            raise NotWalkable(f"{layer.name}: UpSampling2D other than nearest by one factor")
        return "spatial"
    if name in POINTWISE:
        return "pointwise"
    raise NotWalkable(f"{layer.name}: a {name} layer, which the layer-by-layer executor does "
                      "not know")


def _pad_amount(layer) -> int:
    from keras import layers

    if isinstance(layer, layers.ZeroPadding2D):
        return int(layer.padding[0][0])
    return int(layer.padding)


@dataclasses.dataclass
class Stage:
    """The layers that compute one stored tensor from stored tensors (see the module
    docstring). ``margin``: output pixels computed beyond a tile's own on an inner side;
    ``unit``: tile edges (output pixels) are multiples of it; ``scales``: input pixels per
    output pixel, per stored input; ``work_bytes``: working memory per output pixel;
    ``macs``: convolution multiply-adds per output pixel."""

    name: str
    output: int
    sources: list
    ops: list
    margin: int
    unit: int
    scales: dict
    channels: int
    dtype: str
    work_bytes: float
    macs: float
    checks: list = dataclasses.field(default_factory=list)  # (layer, input, scale) to check
    statistics: bool = False
    _compiled: object = None


@dataclasses.dataclass(frozen=True)
class StageTiles:
    """A stage's tiles: output row and column edges (``rows[i]:rows[i + 1]``)."""

    rows: tuple
    cols: tuple

    @property
    def count(self) -> int:
        return (len(self.rows) - 1) * (len(self.cols) - 1)


@dataclasses.dataclass
class LayerPlan:
    """How ``LayerwiseNetwork.run`` will run one image: each stage's output size and tiles,
    where each stored tensor lives (``"memory"`` or ``"disk"``), and the cost."""

    height: int
    width: int
    padded: tuple
    sizes: dict  # value id -> (height, width)
    tiles: list  # StageTiles per stage
    placement: dict  # value id -> "memory" | "disk"
    work_bytes: int  # the largest tile's working set (estimate)
    memory_bytes: int  # stored tensors held in memory at the peak
    disk_bytes: int  # disk-backed tensors at the peak
    temp_dir: str | None
    arithmetic: float  # multiply-adds run / those of one untiled pass
    stages: int
    output_scale: float

    @property
    def windows(self) -> list:
        """Every stage's tiles, as (stage, row, column) (the old plan's ``windows``: how many
        times the network code was called)."""
        return [(s, i, j) for s, t in enumerate(self.tiles)
                for i in range(len(t.rows) - 1) for j in range(len(t.cols) - 1)]

    def describe(self) -> str:
        disk = (f", {self.disk_bytes / 2 ** 30:.1f} GiB on disk in {self.temp_dir}"
                if self.disk_bytes else "")
        return (f"layer by layer: {self.stages} stages in {len(self.windows)} tiles, "
                f"{self.arithmetic:.3f}x one pass's arithmetic{disk}")


class LayerwiseNetwork:
    """A Keras network walked layer by layer (see the module docstring).

    Args:
        network: a functional Keras network taking pixels (B, H, W, 3) in [0, 255] (and, for a
            multi-style network, its style weights).
        style_weights: the weights (N,) of a multi-style network's styles (a mix allowed).

    Raises NotWalkable (one line) for a network it cannot walk.
    """

    def __init__(self, network, style_weights=None):
        import keras

        self.network = network
        self.backend = keras.backend.backend()
        spatial_inputs = [t for t in network.inputs if len(t.shape) == 4]
        if len(spatial_inputs) != 1 or len(network.outputs) != 1:
            raise NotWalkable(f"{network.name}: needs one image input and one output")
        self.pixels = id(spatial_inputs[0])
        extra = [t for t in network.inputs if len(t.shape) != 4]
        if extra and style_weights is None:
            raise NotWalkable(f"{network.name}: a multi-style network needs its style weights "
                              "(bind it to a style first, or pass style_weights)")
        self._walk(style_weights)
        self._plan_stages()

    # -- the graph --------------------------------------------------------------------------

    def _walk(self, style_weights):
        from kperceptual import networks

        nodes, seen = [], set()

        def visit(tensor):
            operation, node_index, _ = tensor._keras_history
            node = operation._inbound_nodes[node_index]
            if id(node) in seen:
                return
            seen.add(id(node))
            for t in node.input_tensors:
                visit(t)
            nodes.append(node)

        visit(self.network.outputs[0])
        self.values = {}  # value id -> KerasTensor
        self.ops = []
        self.producer = {}
        consumers = {}
        pre_pad = 1
        output_id = id(self.network.outputs[0])
        for node in nodes:
            layer = node.operation
            if len(node.output_tensors) != 1:
                raise NotWalkable(f"{layer.name}: a layer with several outputs")
            out = node.output_tensors[0]
            kind = _classify(layer)
            if isinstance(layer, networks.CropToReference):
                if id(out) != output_id or id(node.input_tensors[1]) != self.pixels:
                    raise NotWalkable(f"{layer.name}: a crop other than the output's to the "
                                      "input image")
                inputs = node.input_tensors[:1]
            elif isinstance(layer, networks.ConditionalInstanceNormalization):
                inputs = node.input_tensors[:1]
            else:
                inputs = list(node.input_tensors)
                if any(len(t.shape) != 4 for t in inputs):
                    raise NotWalkable(f"{layer.name}: takes a tensor that is not an image")
            if kind == "input" and id(out) != self.pixels:
                continue  # the style weights: fixed in the normalisation layers
            op = _Op(layer, node, [id(t) for t in inputs], id(out), kind)
            if kind == "norm":
                op.fixed = _fixed_normalization(layer, node, style_weights)
            self.values[id(out)] = out
            self.producer[id(out)] = op
            self.ops.append(op)
            for v in op.inputs:
                consumers.setdefault(v, []).append(op)
            if isinstance(layer, networks.PadToMultiple):
                if pre_pad != 1:
                    raise NotWalkable(f"{layer.name}: a second PadToMultiple")
                pre_pad = layer.multiple
                self._check_pointwise_from_pixels(op)
        self.consumers = consumers
        self.output = output_id
        self.pre_pad = pre_pad
        if pre_pad > 1:
            for op in consumers.get(self.pixels, []):
                if op.kind == "spatial":
                    raise NotWalkable(f"{op.layer.name}: reads the pixels before PadToMultiple, "
                                      "which the image's padding would change")
        for op in self.ops:  # a padding layer gives back what the next (valid) conv takes
            if op.kind != "spatial":
                continue
            pads = [c for c in consumers.get(op.output, [])]
            if self._is_padding(op.layer):
                p = _pad_amount(op.layer)
                if len(pads) != 1 or not self._valid_conv_taking(pads[0].layer, 2 * p):
                    raise NotWalkable(f"{op.layer.name}: a padding not read by one valid "
                                      "convolution whose kernel it fits")
            elif self._is_valid_conv(op.layer):
                source = self.producer.get(op.inputs[0])
                if source is None or not self._is_padding(source.layer):
                    raise NotWalkable(f"{op.layer.name}: a valid convolution without the "
                                      "padding that keeps the size")

    def _check_pointwise_from_pixels(self, op):
        value = op.inputs[0]
        while value != self.pixels:
            source = self.producer[value]
            if source.kind != "pointwise" or len(source.inputs) != 1:
                raise NotWalkable(f"{op.layer.name}: PadToMultiple after a layer other than "
                                  "pointwise ones on the pixels")
            value = source.inputs[0]

    @staticmethod
    def _is_padding(layer) -> bool:
        from keras import layers

        from kperceptual import networks

        return isinstance(layer, (networks.ReflectionPadding2D, layers.ZeroPadding2D))

    @staticmethod
    def _is_valid_conv(layer) -> bool:
        from keras import layers

        return (isinstance(layer, layers.Conv2D) and not isinstance(layer, layers.Conv2DTranspose)
                and layer.padding == "valid")

    def _valid_conv_taking(self, layer, extent: int) -> bool:
        if not self._is_valid_conv(layer):
            return False
        kernel = _pair(layer.kernel_size)
        dilation = _pair(layer.dilation_rate)[0]
        return all(dilation * (k - 1) == extent for k in kernel)

    # -- stages -----------------------------------------------------------------------------

    def _plan_stages(self):
        stored = {self.pixels, self.output}
        for op in self.ops:
            if op.kind == "norm":
                stored.add(op.inputs[0])
        for value, users in self.consumers.items():
            if len(users) > 1 and not self._pointwise_of_one_stored(value, stored):
                stored.add(value)
        self.stored = stored
        self.stages = []
        for op in self.ops:
            if op.output in stored and op.kind != "input":
                self.stages.append(self._stage(op.output))
        for stage in self.stages:
            stage.statistics = any(op.kind == "norm" and op.inputs[0] == stage.output
                                   for op in self.ops)
        last_use = {}
        for index, stage in enumerate(self.stages):
            for source in stage.sources:
                last_use[source] = index
        self.last_use = last_use

    def _pointwise_of_one_stored(self, value, stored) -> bool:
        """Whether ``value`` is pixel-wise layers on one stored tensor (the first residual
        block's input, ReLU of a normalisation): then each stage that reads it recomputes it
        from that tensor instead of storing it."""
        while value not in stored:
            op = self.producer[value]
            if op.kind not in ("pointwise", "norm", "identity") or len(op.inputs) != 1:
                return False
            value = op.inputs[0]
        return value != self.pixels or self.pre_pad == 1

    def _stage(self, output) -> Stage:
        members, sources, stack = set(), set(), [output]
        while stack:
            value = stack.pop()
            op = self.producer[value]
            members.add(id(op))
            for v in op.inputs:
                if v in self.stored:
                    sources.add(v)
                elif id(self.producer[v]) not in members:
                    stack.append(v)
        ops = [op for op in self.ops if id(op) in members]
        sources = [op.output for op in self.ops if op.output in sources]
        paths = {s: {s: _Path(Fraction(1), Fraction(0), 1)} for s in sources}
        macs, checks = {}, []
        for op in ops:
            merged = {}
            for v in op.inputs:
                for s, p in paths[v].items():
                    if s in merged:
                        if merged[s].scale != p.scale:
                            raise NotWalkable(f"{op.layer.name}: adds tensors of different "
                                              "scales")
                        merged[s] = _Path(p.scale, max(p.radius, merged[s].radius),
                                          _lcm(p.align, merged[s].align))
                    else:
                        merged[s] = p
            if op.kind == "spatial":
                merged = {s: self._through(op, p) for s, p in merged.items()}
                macs[id(op)] = self._macs(op)
                checks.extend((op.layer.name, s, p.scale) for s, p in merged.items())
            paths[op.output] = merged
        out_paths = paths[output]
        unit, margin = 1, 0
        for s, p in out_paths.items():
            step = p.align / p.scale
            if step.denominator != 1:
                raise NotWalkable(f"{self.values[output].name}: a scale that does not map "
                                  "whole pixels")
            unit = _lcm(unit, int(step))
            margin = max(margin, math.ceil(p.radius / p.scale))
        margin = _round_up(margin, unit)

        def per_output_pixel(value) -> Fraction:
            """Pixels of ``value`` per output pixel (areas)."""
            source, p = next(iter(paths[value].items()))
            return (out_paths[source].scale / p.scale) ** 2

        work = 0.0
        for v in list(sources) + [op.output for op in ops]:
            tensor = self.values[v]
            itemsize = 4 if v == self.pixels else _numpy_dtype(tensor.dtype).itemsize
            work += float(per_output_pixel(v)) * int(tensor.shape[-1]) * itemsize
        out_tensor = self.values[output]
        channels = int(out_tensor.shape[-1])
        work += channels * (4 + _numpy_dtype(out_tensor.dtype).itemsize)  # cropped copies
        mac_total = 0.0
        for op in ops:
            if id(op) in macs:
                per_pixel, at_input = macs[id(op)]
                value = op.inputs[0] if at_input else op.output
                mac_total += per_pixel * float(per_output_pixel(value))
        return Stage(
            name=self.producer[output].layer.name, output=output, sources=sources, ops=ops,
            margin=margin, unit=unit,
            scales={s: out_paths[s].scale for s in sources}, channels=channels,
            dtype=out_tensor.dtype, work_bytes=WORK_SAFETY * work, macs=mac_total,
            checks=checks)

    @staticmethod
    def _through(op, p: _Path) -> _Path:
        from keras import layers

        from kperceptual import networks

        layer = op.layer
        scale, radius, align = p.scale, p.radius, p.align
        if isinstance(layer, layers.Conv2DTranspose):
            k, s = max(_pair(layer.kernel_size)), _pair(layer.strides)[0]
            return _Path(scale / s, radius + math.ceil(k / s) * scale, align)
        if isinstance(layer, layers.Conv2D):
            k, s = max(_pair(layer.kernel_size)), _pair(layer.strides)[0]
            d = _pair(layer.dilation_rate)[0]
            radius += Fraction(d * (k - 1), 2) * scale
            step = scale * s
            if step.denominator == 1:
                align = _lcm(align, int(step))
            elif step.numerator != 1:
                raise NotWalkable(f"{layer.name}: a stride that does not fall on whole pixels")
            return _Path(scale * s, radius, align)
        if isinstance(layer, networks.BicubicUpsampling2D):
            return _Path(scale / layer.factor, radius + 2 * scale, align)
        if isinstance(layer, networks.NearestUpsampling2D):
            return _Path(scale / layer.factor, radius, align)
        if isinstance(layer, layers.UpSampling2D):
            return _Path(scale / _pair(layer.size)[0], radius, align)
        return p  # padding: the convolution after it accounts for its reach

    @staticmethod
    def _macs(op) -> tuple[float, bool]:
        """Multiply-adds per output pixel of a convolution (per input pixel for a transposed
        one: second value True); 0 for other layers."""
        from keras import layers

        layer = op.layer
        if isinstance(layer, layers.Conv2D):
            kh, kw = _pair(layer.kernel_size)
            cin = int(op.node.input_tensors[0].shape[-1])
            return float(kh * kw * cin * layer.filters), isinstance(layer, layers.Conv2DTranspose)
        return 0.0, False

    # -- sizes and plans --------------------------------------------------------------------

    def sizes(self, height: int, width: int) -> dict:
        """Each stored tensor's (height, width) for an image of ``height`` x ``width`` (padded
        to the network's ``PadToMultiple`` first). Raises NotWalkable where a stage's inputs
        do not map to whole output pixels."""
        padded = (_round_up(height, self.pre_pad), _round_up(width, self.pre_pad))
        sizes = {self.pixels: padded}
        for stage in self.stages:
            for name, source, scale in stage.checks:
                for length in sizes[source]:
                    if (Fraction(length) / scale).denominator != 1:
                        raise NotWalkable(f"{name}: a {length}-pixel side of its stage's input "
                                          "does not map to whole pixels there")
            found = set()
            for s in stage.sources:
                size = []
                for length in sizes[s]:
                    n = Fraction(length) / stage.scales[s]
                    if n.denominator != 1:
                        raise NotWalkable(f"{stage.name}: a {length}-pixel side does not map "
                                          "to whole pixels of its output")
                    size.append(int(n))
                found.add(tuple(size))
            if len(found) != 1:
                raise NotWalkable(f"{stage.name}: its inputs give different output sizes")
            sizes[stage.output] = found.pop()
        return sizes

    @staticmethod
    def _axis(length: int, tile: int, unit: int) -> tuple:
        count = max(1, -(-length // tile))
        edges = [0]
        for i in range(1, count):
            edge = unit * round(i * length / count / unit)
            if edges[-1] < edge < length:
                edges.append(edge)
        return tuple(edges + [length])

    def plan(self, height: int, width: int, room_bytes: float, tile: int = 0,
             temp_dir: str | None = None, check_disk: bool = True,
             storage_bytes: float | None = None) -> LayerPlan:
        """Tiles and storage for an image of ``height`` x ``width`` within ``room_bytes`` of
        memory (beyond what the caller holds: the image, the output); ``tile``: at most this
        many output pixels per tile side (0: as the room allows, up to MAX_TILE);
        ``storage_bytes``: at most this much of the stored tensors in memory (None: what the
        room leaves after the largest tile; 0: all on disk); ``temp_dir``: where the others
        go (None: ``tempfile.gettempdir()``, which honours TMPDIR). Raises NotEnoughRoom (the
        room cannot hold the smallest tile, or the temporary folder's disk is too full) and
        NotWalkable (the size does not map)."""
        sizes = self.sizes(height, width)
        overhead = RUN_BYTES + STAGE_BYTES * len(self.stages)
        given, room_bytes = room_bytes, room_bytes - overhead
        work_room = min(WORK_FRACTION * room_bytes, WORK_CAP)
        tiles, work_peak, macs_run, macs_one = [], 0, 0.0, 0.0
        for stage in self.stages:
            h, w = sizes[stage.output]
            side = int(math.sqrt(max(work_room, 0) / STREAMS / stage.work_bytes)) - \
                2 * stage.margin
            if side < min(MIN_TILE, max(h, w)):
                need = (STREAMS * stage.work_bytes * (MIN_TILE + 2 * stage.margin) ** 2
                        / WORK_FRACTION + overhead)
                raise NotEnoughRoom(
                    f"the layer-by-layer run needs about {need / 2 ** 20:.1f} MiB beyond the "
                    f"image buffers for {MIN_TILE}-pixel tiles of {stage.name}; it has "
                    f"{max(given, 0) / 2 ** 20:.1f} MiB", "memory")
            side = min(side, tile or MAX_TILE, MAX_TILE)
            side = max(side // stage.unit * stage.unit, stage.unit)
            t = StageTiles(self._axis(h, side, stage.unit), self._axis(w, side, stage.unit))
            tiles.append(t)
            largest = 0
            for rows in zip(t.rows, t.rows[1:]):
                for cols in zip(t.cols, t.cols[1:]):
                    area = self._extent(rows, h, stage.margin) * self._extent(cols, w,
                                                                                stage.margin)
                    macs_run += area * stage.macs
                    largest = max(largest, area)
            work_peak = max(work_peak, largest * stage.work_bytes * min(STREAMS, t.count))
            macs_one += h * w * stage.macs
        # Where each stored tensor lives: memory while the room left by the tiles holds it.
        storage_room = max(room_bytes - work_peak, 0)
        if storage_bytes is not None:
            storage_room = min(storage_room, storage_bytes)
        placement, live, in_memory, on_disk, peak_memory, peak_disk = {}, [], 0, 0, 0, 0
        for index, stage in enumerate(self.stages):
            if stage.output != self.output:
                h, w = sizes[stage.output]
                size = h * w * stage.channels * _numpy_dtype(stage.dtype).itemsize
                where = "memory" if in_memory + size <= storage_room else "disk"
                placement[stage.output] = where
                live.append((stage.output, size, where))
                if where == "memory":
                    in_memory += size
                else:
                    on_disk += size
                peak_memory, peak_disk = max(peak_memory, in_memory), max(peak_disk, on_disk)
            for value, size, where in list(live):
                if self.last_use.get(value, -1) <= index and value != stage.output:
                    live.remove((value, size, where))
                    if where == "memory":
                        in_memory -= size
                    else:
                        on_disk -= size
        temp_dir = (temp_dir or tempfile.gettempdir()) if peak_disk else None
        if peak_disk:
            free = shutil.disk_usage(temp_dir).free
            if check_disk and peak_disk * DISK_MARGIN > free:
                raise NotEnoughRoom(
                    f"the layer-by-layer run needs {peak_disk * DISK_MARGIN / 2 ** 30:.1f} GiB "
                    f"of temporary disk in {temp_dir} (free: {free / 2 ** 30:.1f} GiB; set "
                    "TMPDIR to a folder with more)", "disk")
        out_h, _ = sizes[self.output]
        padded = sizes[self.pixels]
        return LayerPlan(height, width, padded, sizes, tiles, placement, int(work_peak),
                         int(peak_memory), int(peak_disk), temp_dir,
                         macs_run / macs_one if macs_one else 1.0, len(self.stages),
                         out_h / padded[0])

    @staticmethod
    def _extent(edges: tuple, length: int, margin: int) -> int:
        start, end = edges
        return min(end + margin, length) - max(start - margin, 0)

    # -- running ----------------------------------------------------------------------------

    def _evaluate(self, stage: Stage, windows: dict):
        """The stage's layers on backend tensors ``windows`` (value id -> tensor)."""
        from keras import ops

        tensors = {}
        for s, x in windows.items():
            value = self.values[s]
            tensors[id(value)] = ops.cast(x, "float32") if s == self.pixels else x
        for op in stage.ops:
            if op.kind == "identity":
                y = tensors[op.inputs[0]]
            elif op.kind == "norm":
                y = op.fixed(tensors[op.inputs[0]])
            else:
                args, kwargs = op.node.arguments.fill_in(tensors)
                y = op.layer(*args, **kwargs)
            tensors[op.output] = y
        return tensors[stage.output]

    def _compiled(self, stage: Stage):
        """``fn(windows..., box) -> (crop, mean, row sums, row sums of squares)``: the stage on
        its windows, cropped to ``box`` = (top, left, height, width) of the window's output,
        and (for a normalisation's input) the crop's per-channel float32 mean and per-row sums
        of deviations from it and of their squares (B=1)."""
        if stage._compiled is not None:
            return stage._compiled
        if self.backend != "tensorflow":
            stage._compiled = self._eager(stage)
            return stage._compiled
        import tensorflow as tf

        # Arrays cross into and out of the graph by DLPack, without copies; bfloat16 (which
        # NumPy's DLPack does not carry) as its bits, uint16.
        def carried(dtype):
            return tf.uint16 if dtype == "bfloat16" else tf.as_dtype(dtype)

        dtypes = ["uint8" if s == self.pixels else self.values[s].dtype for s in stage.sources]
        specs = [tf.TensorSpec((1, None, None, int(self.values[s].shape[-1])), carried(d))
                 for s, d in zip(stage.sources, dtypes)]
        specs.append(tf.TensorSpec((4,), tf.int32))
        bfloat16_out = stage.dtype == "bfloat16"

        @tf.function(input_signature=specs, reduce_retracing=True)
        def fn(*args):
            *windows, box = args
            windows = [tf.bitcast(w, tf.bfloat16) if d == "bfloat16" else w
                       for w, d in zip(windows, dtypes)]
            y = self._evaluate(stage, dict(zip(stage.sources, windows)))
            carried_y = tf.bitcast(y, tf.uint16) if bfloat16_out else y
            if not stage.statistics:
                return (carried_y,)
            # The window's output whole (the tile is cropped from it outside, without a copy);
            # the statistics of the tile's part: per row, the sums over all columns less those
            # over the margins' few columns.
            top, left, h, w = box[0], box[1], box[2], box[3]
            x = tf.cast(y, tf.float32)

            def row_sums(t):
                sums = (tf.reduce_sum(t, axis=[0, 2]) - tf.reduce_sum(t[:, :, :left], axis=[0, 2])
                        - tf.reduce_sum(t[:, :, left + w:], axis=[0, 2]))
                return sums[top:top + h]

            # Deviations from a shift near the mean (of every 8th pixel's), so that the sums of
            # squares do not cancel.
            shift = tf.reduce_mean(x[:, top:top + h:8, left:left + w:8], axis=[0, 1, 2])
            return (carried_y, shift, row_sums(x),
                    row_sums(tf.math.squared_difference(x, shift)))

        # One trace per stage (the signature leaves sizes open); TensorFlow would take the
        # stages' functions, made by one line, for one function retraced in a loop.
        fn._omit_frequent_tracing_warning = True
        to_tensor, to_numpy = _dlpack_bridge()

        def run(windows, box):
            windows = [to_tensor(w.view(np.uint16) if d == "bfloat16" else w)
                       for w, d in zip(windows, dtypes)]
            y, *moments = fn(*windows, tf.constant(box, tf.int32))
            y = to_numpy(y)
            if bfloat16_out:
                y = y.view(_numpy_dtype("bfloat16"))
            top, left, h, w = box
            y = y[:, top:top + h, left:left + w]  # a view
            return [y] + [t.numpy() for t in moments]

        stage._compiled = run
        return run

    def _eager(self, stage: Stage):
        from keras import ops

        def run(windows, box):
            y = self._evaluate(stage, {s: ops.convert_to_tensor(w)
                                       for s, w in zip(stage.sources, windows)})
            top, left, h, w = box
            y = np.asarray(ops.convert_to_numpy(y))[:, top:top + h, left:left + w]
            if not stage.statistics:
                return [y]
            x = y.astype(np.float64)
            shift = x[:, ::8, ::8].mean(axis=(0, 1, 2))
            return [y, shift, x.sum(axis=(0, 2)), np.square(x - shift).sum(axis=(0, 2))]

        return run

    def run(self, image: np.ndarray, plan: LayerPlan, progress=None) -> np.ndarray:
        """The network's output for uint8 ``image`` (H, W, 3), float32 (H*s, W*s, 3), stage by
        stage as ``plan`` says. ``progress``: called with (stage index, stage count) after each
        stage. Temporary files are removed before it returns or raises.

        ``last_seconds`` then holds where the time went, in thread-seconds summed over the
        STREAMS threads: ``network`` (the stages' layers), ``read`` and ``write`` (copies to
        and from the stored tensors; ``io_cpu``: their CPU time)."""
        from kperceptual.inference import tiling

        if image.shape[:2] != (plan.height, plan.width):
            raise ValueError(f"the plan is for {plan.width}x{plan.height}, the image is "
                             f"{image.shape[1]}x{image.shape[0]}")
        self.last_seconds = dict.fromkeys(("network", "read", "write", "io_cpu"), 0.0)
        stores = {self.pixels: tiling.pad_to_multiple(np.asarray(image, np.uint8),
                                                      self.pre_pad)}
        folder = None
        self.last_folder = None
        try:
            for index, (stage, tiles) in enumerate(zip(self.stages, plan.tiles)):
                h, w = plan.sizes[stage.output]
                dtype = _numpy_dtype(stage.dtype)
                if stage.output == self.output:
                    target = np.empty((round(plan.height * plan.output_scale),
                                       round(plan.width * plan.output_scale), stage.channels),
                                      np.float32)
                elif plan.placement[stage.output] == "disk":
                    if folder is None:
                        folder = self.last_folder = tempfile.mkdtemp(
                            prefix="kperceptual-layers-", dir=plan.temp_dir)
                    target = DiskArray(os.path.join(folder, f"{index:02d}_{stage.name}"),
                                       (h, w, stage.channels), dtype)
                else:
                    target = np.empty((h, w, stage.channels), dtype)
                stores[stage.output] = target
                moments = self._run_stage(stage, tiles, stores, plan.sizes)
                if moments is not None:
                    for op in self.ops:
                        if op.kind == "norm" and op.inputs[0] == stage.output:
                            op.fixed.set_statistics(moments)
                for value in list(stores):
                    if value not in (self.pixels, self.output, stage.output) and \
                            self.last_use.get(value, -1) <= index:
                        _drop(stores.pop(value))
                if progress is not None:
                    progress(index + 1, len(self.stages))
            return stores[self.output]
        finally:
            for value in list(stores):
                if value != self.output:
                    _drop(stores.pop(value))
            if folder is not None:
                shutil.rmtree(folder, ignore_errors=True)

    def _run_stage(self, stage: Stage, tiles: StageTiles, stores: dict, sizes):
        """Runs one stage tile by tile into ``stores[stage.output]``, in STREAMS threads that
        each read their tiles' windows, run the network on them and write the tiles (so one
        reads or writes while another computes, and two tiles' layers share the cores).
        Returns the output's whole-image moments where a normalisation needs them (else
        None)."""
        from concurrent.futures import ThreadPoolExecutor

        from kperceptual.inference import tiling

        fn = self._compiled(stage)
        h, w = sizes[stage.output]
        m = stage.margin
        target = stores[stage.output]
        boxes = [(r0, r1, c0, c1) for r0, r1 in zip(tiles.rows, tiles.rows[1:])
                 for c0, c1 in zip(tiles.cols, tiles.cols[1:])]

        def read(k, buffers, seconds):
            start, cpu = time.perf_counter(), time.thread_time()
            r0, r1, c0, c1 = boxes[k]
            wr0, wr1, wc0, wc1 = max(r0 - m, 0), min(r1 + m, h), max(c0 - m, 0), min(c1 + m, w)
            windows = []
            for j, s in enumerate(stage.sources):
                scale, store = stage.scales[s], stores[s]
                rows = (int(wr0 * scale), int(wr1 * scale))
                cols = (int(wc0 * scale), int(wc1 * scale))
                out = _buffer(buffers, j, (rows[1] - rows[0], cols[1] - cols[0],
                                           store.shape[2]), store.dtype)
                if isinstance(store, DiskArray):
                    store.read(rows, cols, out)
                else:
                    np.copyto(out, store[rows[0]:rows[1], cols[0]:cols[1]])
                windows.append(out[None])
            seconds["read"] += time.perf_counter() - start
            seconds["io_cpu"] += time.thread_time() - cpu
            return windows, (r0 - wr0, c0 - wc0, r1 - r0, c1 - c0)

        def write(k, tile, seconds):
            start, cpu = time.perf_counter(), time.thread_time()
            r0, r1, c0, c1 = boxes[k]
            if isinstance(target, DiskArray):
                target.write(r0, c0, tile)
            else:  # the output is cropped to the image's part
                r1, c1 = min(r1, target.shape[0]), min(c1, target.shape[1])
                if r0 < r1 and c0 < c1:
                    target[r0:r1, c0:c1] = tile[:r1 - r0, :c1 - c0]
            seconds["write"] += time.perf_counter() - start
            seconds["io_cpu"] += time.thread_time() - cpu

        streams = max(1, min(STREAMS, len(boxes)))

        def stream(first):
            buffers, seconds = {}, dict.fromkeys(("network", "read", "write", "io_cpu"), 0.0)
            moments = tiling._Moments() if stage.statistics else None
            for k in range(first, len(boxes), streams):
                windows, box = read(k, buffers, seconds)
                start = time.perf_counter()
                outputs = fn(windows, box)
                seconds["network"] += time.perf_counter() - start
                tile = outputs[0][0]
                if tile.shape[:2] != box[2:]:
                    raise RuntimeError(f"{stage.name}: a tile came out {tile.shape[:2]}, not "
                                       f"{box[2:]}")
                write(k, tile, seconds)
                if moments is not None:
                    _add_tile_moments(moments, tile.shape[0] * tile.shape[1], *outputs[1:])
            return moments, seconds

        if streams == 1:
            parts = [stream(0)]
        else:
            with ThreadPoolExecutor(streams, thread_name_prefix="kperceptual-layers") as pool:
                parts = list(pool.map(stream, range(streams)))
        for _, seconds in parts:
            for key, value in seconds.items():
                self.last_seconds[key] += value
        if not stage.statistics:
            return None
        moments = parts[0][0]
        for other, _ in parts[1:]:
            _merge_moments(moments, other)
        return moments


class DiskArray:
    """A (height, width, channels) array in a file of its own, read and written a row at a
    time (``os.preadv`` / ``os.pwrite``): nothing of it is mapped into the process, so it never
    counts as resident memory (the kernel's page cache holds what it can). On this project's
    2-core VM that moved data about twice as fast as a ``numpy.memmap``, whose page faults
    dominate."""

    def __init__(self, path: str, shape: tuple, dtype):
        self.path, self.shape, self.dtype = path, tuple(shape), np.dtype(dtype)
        self.pixel_bytes = self.shape[2] * self.dtype.itemsize
        self.row_bytes = self.shape[1] * self.pixel_bytes
        self.fd = os.open(path, os.O_RDWR | os.O_CREAT | os.O_EXCL, 0o600)
        os.ftruncate(self.fd, self.shape[0] * self.row_bytes)

    @property
    def nbytes(self) -> int:
        return self.shape[0] * self.row_bytes

    def read(self, rows: tuple, cols: tuple, out: np.ndarray):
        """Rows ``rows[0]:rows[1]``, columns ``cols[0]:cols[1]`` into ``out`` (C-contiguous)."""
        raw = out.reshape(out.shape[0], -1).view(np.uint8)
        if cols == (0, self.shape[1]):
            self._read_into(memoryview(raw.reshape(-1)), rows[0] * self.row_bytes)
            return
        offset = rows[0] * self.row_bytes + cols[0] * self.pixel_bytes
        for i in range(rows[1] - rows[0]):
            self._read_into(memoryview(raw[i]), offset + i * self.row_bytes)

    def _read_into(self, view, offset: int):
        while len(view):
            n = os.preadv(self.fd, [view], offset)
            if n <= 0:
                raise OSError(f"{self.path}: short read at byte {offset}")
            view, offset = view[n:], offset + n

    def write(self, top: int, left: int, tile: np.ndarray):
        """``tile`` (h, w, channels; rows may be a view into a wider array) at rows
        ``top:top + h``, columns ``left:left + w``."""
        if not (tile.strides[2] == tile.itemsize and tile.strides[1] == self.pixel_bytes):
            tile = np.ascontiguousarray(tile)
        if tile.flags.c_contiguous and left == 0 and tile.shape[1] == self.shape[1]:
            self._write_from(memoryview(tile.reshape(-1).view(np.uint8)), top * self.row_bytes)
            return
        offset = top * self.row_bytes + left * self.pixel_bytes
        for i in range(tile.shape[0]):
            row = tile[i].reshape(-1).view(np.uint8)
            self._write_from(memoryview(row), offset + i * self.row_bytes)

    def _write_from(self, view, offset: int):
        while len(view):
            n = os.pwrite(self.fd, view, offset)
            view, offset = view[n:], offset + n

    def close(self):
        """Closes and deletes the file."""
        if self.fd is not None:
            os.close(self.fd)
            self.fd = None
            try:
                os.remove(self.path)
            except FileNotFoundError:
                pass


def _buffer(pool: dict, key, shape: tuple, dtype) -> np.ndarray:
    """A C-contiguous, 64-byte-aligned array of ``shape`` from ``pool[key]`` (grown as
    needed), so that windows reuse their memory from tile to tile."""
    dtype = np.dtype(dtype)
    nbytes = int(np.prod(shape)) * dtype.itemsize
    raw = pool.get(key)
    if raw is None or raw.nbytes < nbytes:
        raw = pool[key] = _aligned_empty(nbytes)
    return raw[:nbytes].view(dtype).reshape(shape)


def _aligned_empty(nbytes: int) -> np.ndarray:
    """``nbytes`` uint8 starting on a 64-byte boundary (what the framework's kernels take
    without copying again)."""
    raw = np.empty(nbytes + 64, np.uint8)
    offset = (-raw.ctypes.data) % 64
    return raw[offset:offset + nbytes]


def _dlpack_bridge():
    """(numpy -> TensorFlow, TensorFlow -> numpy) sharing the arrays' memory (DLPack) where
    both sides can, else copies."""
    import tensorflow as tf

    class _Exported:
        def __init__(self, tensor):
            self.tensor = tensor

        def __dlpack__(self, stream=None, **kwargs):
            return tf.experimental.dlpack.to_dlpack(self.tensor)

        def __dlpack_device__(self):
            return (1, 0)  # kDLCPU

    def to_tensor(array):
        try:
            return tf.experimental.dlpack.from_dlpack(array.__dlpack__())
        except (BufferError, TypeError, ValueError, AttributeError, tf.errors.OpError):
            return tf.convert_to_tensor(array)

    def to_numpy(tensor):
        try:
            return np.from_dlpack(_Exported(tensor))
        except (BufferError, TypeError, ValueError, AttributeError, RuntimeError,
                tf.errors.OpError):
            return tensor.numpy()

    return to_tensor, to_numpy


def _merge_moments(moments, other):
    """Merges ``other`` into ``moments`` (``tiling._Moments``; Chan et al.)."""
    if not other.count:
        return
    total = moments.count + other.count
    delta = other.mean - moments.mean
    moments.mean = moments.mean + delta * other.count / total
    moments.m2 = moments.m2 + other.m2 + delta ** 2 * moments.count * other.count / total
    moments.count = total


def _add_tile_moments(moments, n: int, shift, row_sums, row_squares):
    """Merges one tile's statistics into ``moments`` (float64, Chan et al.'s pairwise merge):
    per row and channel, the float32 sums of the values and of their squared deviations from
    ``shift`` (near the tile's mean, so the squares do not cancel)."""
    shift = np.asarray(shift, np.float64)
    tile_mean = np.asarray(row_sums, np.float64).sum(axis=0) / n
    squares = np.asarray(row_squares, np.float64).sum(axis=0)
    tile_m2 = np.maximum(squares - n * np.square(tile_mean - shift), 0.0)
    total = moments.count + n
    delta = tile_mean - moments.mean
    moments.mean = moments.mean + delta * n / total
    moments.m2 = moments.m2 + tile_m2 + delta ** 2 * moments.count * n / total
    moments.count = total


def _drop(array):
    """Forgets a stored tensor; a disk-backed one's file is deleted."""
    if isinstance(array, DiskArray):
        array.close()


def windows_arithmetic(network, plan) -> float:
    """Multiply-adds of ``tiling.Tiler.run`` with the window plan ``plan`` over those of one
    untiled pass: a pass over the windows per whole-image normalisation layer, each through the
    convolutions that layer depends on, then one through the whole network (one pass only,
    where the network has no such layer or there is one window); all over the windows'
    overlapping area."""
    walker = LayerwiseNetwork(network)
    scale = {walker.pixels: _Path(Fraction(1), Fraction(0), 1)}
    per_input_pixel = {}
    for op in walker.ops:
        if op.kind == "input":
            continue
        path = scale[op.inputs[0]]
        if op.kind == "spatial":
            out = walker._through(op, path)
            macs, at_input = walker._macs(op)
            if macs:
                per_input_pixel[op.output] = macs / float(
                    (path.scale if at_input else out.scale) ** 2)
            path = out
        scale[op.output] = path

    def convolutions(value, seen):
        if value in seen or value not in walker.producer:
            return 0.0
        seen.add(value)
        op = walker.producer[value]
        return per_input_pixel.get(value, 0.0) + sum(convolutions(v, seen) for v in op.inputs)

    full = sum(per_input_pixel.values())
    passes = full
    if len(plan.windows) > 1:
        passes += sum(convolutions(op.inputs[0], set()) for op in walker.ops
                      if op.kind == "norm")
    area = len(plan.windows) * plan.window_pixels / (plan.padded[0] * plan.padded[1])
    return passes * area / full
