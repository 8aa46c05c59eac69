"""Tiled application of image transformation networks, exact for whole-image normalisation.

Backend-neutral: the network part is ``keras.layers`` / ``keras.ops``; the rest is numpy.

Instance normalisation (``GroupNormalization``) normalises each channel by its mean and variance
over the *whole* image, so a network run on tiles separately gives each tile its own statistics
and the tiles do not match at their borders. Exact tiling here:

1. The image is reflection-padded at the bottom and right to a multiple of the network's
   alignment (``PadToMultiple``'s multiple, 4 for kperceptual's networks: two stride-2 convs),
   exactly as the network pads it itself, so every statistic covers the same pixels as an
   untiled run.
2. Windows of ``tile`` x ``tile`` pixels start at multiples of the alignment (so the strided
   convs sample the same grid as the untiled run) and overlap their neighbours by
   ``overlap`` >= 2 x ``halo`` + a blend band; ``halo`` covers the network's receptive-field
   radius, so a window's pixels farther than ``halo`` from an inner window edge are those of the
   untiled run once the statistics are the same. Each window owns the part of the image between
   the midpoints of its overlaps with its neighbours.
3. A copy of the network has each normalisation layer replaced by one that applies given
   per-channel means and variances (and the layer's own gamma and beta). For each normalisation
   layer in topological order, one pass over the windows runs the sub-network that ends at that
   layer's input (earlier layers already fixed to their whole-image statistics) and accumulates
   the mean and variance over the pixels each window owns (float64, Chan et al.'s pairwise
   merge); the result fixes that layer.
4. A last pass runs the fixed network on every window and blends the outputs with feathered
   (linear) weights across a band around each cut, weights that sum to one at every pixel.

Cost: one pass per normalisation layer (each through the network up to that layer) plus one
full pass; for the default network (15 instance-norm layers, most of the work in the residual
blocks at quarter resolution) about 7.4 untiled runs' worth of arithmetic, times the windows'
overlap. Networks without whole-image statistics (batch normalisation) need only the last pass.

A multi-style network (conditional instance normalisation) tiles once bound to a style or mix
(``networks.bind_style``: the one-style network with those scales and shifts, whose
``GroupNormalization`` layers are fixed here as any others); ``Tiler`` refuses it unbound.

Images that do not fit whole are run layer by layer instead where the network allows
(``kperceptual.inference.layerwise``: each stage once over the whole image, in tiles with a few pixels of
margin, about one pass's arithmetic); ``Tiler.plan_layers`` plans that and ``Tiler.run`` runs
either kind of plan. The window-by-window passes above remain for networks the layer-by-layer
executor cannot walk (``Tiler.layerwise_reason`` says why), and for networks without
whole-image statistics, where they are one pass already.

Per-window statistics instead (what a ``.tflite`` file without its Keras network would give)
are far off: 19 dB PSNR against the untiled output for the Starry Night network on a 601x543
photo in 320-pixel windows, against 76 dB for the exact tiling; so tiling needs the Keras
network.
"""

from __future__ import annotations

import dataclasses
import math

import numpy as np

from kperceptual.inference.loading import keras_forward

# The untiled forward pass's memory, calibrated on this project's 2-core CPU (TensorFlow,
# float32, ``predict_on_batch``; peak RSS above the loaded model, at 512^2 to 2048^2 pixels):
# the default network (widest activation 256 bytes per input pixel: 64 channels after the last
# upsampling) took 840 to 1,110 bytes per pixel, the (8, 8, 8)-filter test network (32 bytes)
# 130 to 220. Estimate: FORWARD_BYTES_BASE + FORWARD_ACTIVATION_FACTOR x widest activation.
FORWARD_BYTES_BASE = 64
FORWARD_ACTIVATION_FACTOR = 4.5
# Networks whose layers are unknown (a .tflite file): the default network's estimate.
DEFAULT_FORWARD_BYTES_PER_PIXEL = FORWARD_BYTES_BASE + FORWARD_ACTIVATION_FACTOR * 256
# Blend band (pixels) across each cut, beyond the two halos, in the automatic overlap.
BLEND = 16


@dataclasses.dataclass(frozen=True)
class NetworkGeometry:
    """What tiling needs to know about a network.

    ``halo``: pixels of context a window needs beyond what it keeps (covers the receptive-field
    radius); ``alignment``: window offsets and the padded image are multiples of it;
    ``forward_bytes_per_pixel``: estimated peak memory of a forward pass per input pixel;
    ``global_norms``: names of the layers normalising by whole-image statistics.
    """

    halo: int
    alignment: int
    forward_bytes_per_pixel: float
    global_norms: tuple[str, ...]


def _pair_max(value) -> int:
    return max(value) if isinstance(value, (tuple, list)) else int(value)


def network_geometry(network) -> NetworkGeometry:
    """Receptive-field radius, alignment, memory per pixel and global normalisation layers of a
    functional network whose layers form a chain (residual shortcuts at one scale allowed).

    Convolutions and poolings add (kernel - 1) / 2 x dilation x their input's scale (input pixels
    per feature pixel) to the radius; strides and upsamplings change the scale.
    """
    from keras import layers

    scale, radius, downsampling, multiple = 1.0, 0.0, 1.0, 0
    widest, norms = 3 * 4.0, []
    for layer in network.layers:
        kernel = getattr(layer, "kernel_size", None) or getattr(layer, "pool_size", None)
        if kernel is not None:
            radius += (_pair_max(kernel) - 1) / 2 * _pair_max(
                getattr(layer, "dilation_rate", 1)) * scale
            stride = _pair_max(getattr(layer, "strides", None) or 1)
            scale = scale / stride if isinstance(layer, layers.Conv2DTranspose) else scale * stride
        elif isinstance(layer, layers.UpSampling2D):
            scale /= _pair_max(layer.size)
        elif isinstance(getattr(layer, "factor", None), int):  # networks.NearestUpsampling2D
            scale /= layer.factor
        if isinstance(getattr(layer, "multiple", None), int):  # networks.PadToMultiple
            multiple = layer.multiple
        if isinstance(layer, layers.GroupNormalization):
            norms.append(layer.name)
        downsampling = max(downsampling, scale)
        try:
            channels = layer.output.shape[-1]
        except (AttributeError, ValueError):
            continue
        if channels:
            itemsize = np.dtype(layer.compute_dtype).itemsize
            widest = max(widest, channels * itemsize / scale ** 2)
    alignment = max(multiple, int(round(downsampling)), 1)
    halo = alignment * math.ceil((math.ceil(radius) + alignment) / alignment)
    return NetworkGeometry(halo, alignment,
                           FORWARD_BYTES_BASE + FORWARD_ACTIVATION_FACTOR * widest, tuple(norms))


def automatic_overlap(geometry: NetworkGeometry) -> int:
    """Twice the halo plus a blend band, rounded up to the alignment."""
    return _round_up(2 * geometry.halo + BLEND, geometry.alignment)


def _round_up(n: int, multiple: int) -> int:
    return multiple * math.ceil(n / multiple)


@dataclasses.dataclass(frozen=True)
class AxisTiles:
    """Windows along one axis of the padded image.

    Window ``i`` covers ``[starts[i], starts[i] + size)`` and owns ``[cuts[i], cuts[i + 1])``;
    its blend weight ramps linearly over ``cuts[i] +- ramps[i]``.
    """

    starts: tuple[int, ...]
    size: int
    cuts: tuple[int, ...]
    ramps: tuple[int, ...]
    exact: bool  # all owned and blended pixels are >= halo from an inner window edge

    def weights(self, i: int, scale: float, length: int) -> tuple[int, int, np.ndarray]:
        """Window ``i``'s blend weights at ``scale`` x the input resolution, clipped to
        ``length`` output pixels: ``(first, end, weights[end - first])``."""
        first = int(round((self.cuts[i] - self.ramps[i]) * scale))
        end = min(int(round((self.cuts[i + 1] + self.ramps[i + 1]) * scale)), length)
        centres = np.arange(first, end, dtype=np.float64) + 0.5
        w = np.ones(end - first)
        if i > 0:
            w *= _ramp(centres, self.cuts[i] * scale, self.ramps[i] * scale)
        if i + 1 < len(self.starts):
            w *= 1.0 - _ramp(centres, self.cuts[i + 1] * scale, self.ramps[i + 1] * scale)
        return first, end, w.astype(np.float32)


def _ramp(centres: np.ndarray, cut: float, half_width: float) -> np.ndarray:
    if half_width <= 0:
        return (centres >= cut).astype(np.float64)
    return np.clip((centres - (cut - half_width)) / (2 * half_width), 0.0, 1.0)


def plan_axis(length: int, tile: int, overlap: int, halo: int, alignment: int) -> AxisTiles:
    """Windows of ``tile`` pixels over ``length`` (both multiples of ``alignment``) overlapping
    by at least ``overlap``, spread evenly, starting at multiples of ``alignment``."""
    if tile >= length:
        return AxisTiles((0,), length, (0, length), (0, 0), True)
    count = max(2, math.ceil((length - overlap) / (tile - overlap)))
    while True:
        starts = [alignment * int(round(i * (length - tile) / (count - 1) / alignment))
                  for i in range(count)]
        if all(a + tile - b >= overlap for a, b in zip(starts, starts[1:])):
            break
        count += 1
    cuts = [0] + [alignment * ((b + a + tile) // 2 // alignment)
                  for a, b in zip(starts, starts[1:])] + [length]
    blend_half = max(0, (overlap - 2 * halo) // 2)
    ramps = [0] * (count + 1)
    exact = True
    for i in range(1, count):
        room = min(cuts[i] - starts[i] - halo, starts[i - 1] + tile - halo - cuts[i])
        exact = exact and room >= 0
        ramps[i] = max(0, min(room, blend_half, (cuts[i] - cuts[i - 1]) // 2,
                              (cuts[i + 1] - cuts[i]) // 2))
    return AxisTiles(tuple(starts), tile, tuple(cuts), tuple(ramps), exact)


@dataclasses.dataclass(frozen=True)
class TilePlan:
    """Windows over an image of ``height`` x ``width``, padded to ``padded``."""

    height: int
    width: int
    padded: tuple[int, int]
    rows: AxisTiles
    cols: AxisTiles

    @property
    def exact(self) -> bool:
        return self.rows.exact and self.cols.exact

    @property
    def windows(self) -> list[tuple[int, int]]:
        return [(i, j) for i in range(len(self.rows.starts)) for j in range(len(self.cols.starts))]

    @property
    def window_pixels(self) -> int:
        return self.rows.size * self.cols.size


def aligned_tile(tile: int, overlap: int, geometry: NetworkGeometry) -> tuple[int, int]:
    """The window side (rounded down to the alignment) and overlap (rounded up) used."""
    a = geometry.alignment
    return max(a, tile // a * a), _round_up(overlap, a)


def plan_tiles(height: int, width: int, tile: int, overlap: int,
               geometry: NetworkGeometry) -> TilePlan:
    """Windows of at most ``tile`` x ``tile`` (rounded down to the alignment) over an image."""
    a = geometry.alignment
    padded = (_round_up(height, a), _round_up(width, a))
    tile, overlap = aligned_tile(tile, overlap, geometry)
    if tile <= overlap and tile < max(padded):
        raise ValueError(f"tile: {tile} must be larger than tile_overlap ({overlap})")
    return TilePlan(height, width, padded,
                    plan_axis(padded[0], tile, overlap, geometry.halo, a),
                    plan_axis(padded[1], tile, overlap, geometry.halo, a))


def pad_to_multiple(image: np.ndarray, multiple: int, mode: str = "reflect") -> np.ndarray:
    """Pads bottom and right to multiples of ``multiple`` (``np.pad``'s ``mode``; reflection, as
    ``networks.PadToMultiple`` does, by default)."""
    pad_h, pad_w = (-image.shape[0]) % multiple, (-image.shape[1]) % multiple
    if not pad_h and not pad_w:
        return image
    return np.pad(image, ((0, pad_h), (0, pad_w), (0, 0)), mode=mode)


class _Moments:
    """Per-channel count, mean and sum of squared deviations, merged pairwise (float64)."""

    def __init__(self):
        self.count, self.mean, self.m2 = 0, 0.0, 0.0

    def add(self, x: np.ndarray, rows_per_chunk: int = 64):
        n = x.shape[0] * x.shape[1]
        if not n:
            return
        mean = x.mean(axis=(0, 1), dtype=np.float64)
        m2 = sum(np.square(x[r:r + rows_per_chunk] - mean.astype(x.dtype))
                 .sum(axis=(0, 1), dtype=np.float64) for r in range(0, x.shape[0], rows_per_chunk))
        total = self.count + n
        delta = mean - self.mean
        self.mean = self.mean + delta * n / total
        self.m2 = self.m2 + m2 + delta ** 2 * self.count * n / total
        self.count = total

    def group(self, groups: int) -> tuple[np.ndarray, np.ndarray]:
        """Mean and (population) variance per channel, pooled over each of ``groups`` channel
        groups (``GroupNormalization``'s grouping; equal counts per channel)."""
        channels = self.mean.shape[0]
        mean = self.mean.reshape(groups, channels // groups)
        m2 = self.m2.reshape(groups, channels // groups)
        group_mean = mean.mean(axis=1, keepdims=True)
        group_m2 = m2.sum(axis=1, keepdims=True) + (
            self.count * np.square(mean - group_mean)).sum(axis=1, keepdims=True)
        variance = group_m2 / (self.count * mean.shape[1])
        return (np.repeat(group_mean, mean.shape[1], axis=1).reshape(-1),
                np.repeat(variance, mean.shape[1], axis=1).reshape(-1))


def _fixed_statistics_layer_class():
    import keras
    from keras import layers, ops

    class FixedStatisticsNormalization(layers.Layer):
        """A ``GroupNormalization`` with given per-channel mean and variance (whole-image
        statistics), the source layer's gamma, beta and epsilon; computes in float32 and returns
        the source's compute dtype."""

        def __init__(self, source, **kwargs):
            super().__init__(name=f"{source.name}_fixed", dtype="float32", **kwargs)
            channels = int(source.input.shape[-1])
            groups = channels if source.groups == -1 else source.groups
            self.groups, self.epsilon = groups, source.epsilon
            self.output_dtype = source.compute_dtype
            self.gamma = (np.asarray(keras.ops.convert_to_numpy(source.gamma), np.float32)
                          if source.scale else np.ones(channels, np.float32))
            self.beta = (np.asarray(keras.ops.convert_to_numpy(source.beta), np.float32)
                         if source.center else np.zeros(channels, np.float32))
            self.mean = self.add_weight(shape=(channels,), initializer="zeros",
                                        trainable=False, name="mean")
            self.variance = self.add_weight(shape=(channels,), initializer="ones",
                                            trainable=False, name="variance")

        def call(self, x):
            inv = ops.rsqrt(self.variance + self.epsilon) * self.gamma
            y = ops.cast(x, "float32") * inv + (self.beta - self.mean * inv)
            return ops.cast(y, self.output_dtype)

    return FixedStatisticsNormalization


class GlobalStatisticsNetwork:
    """A copy of ``network`` whose ``GroupNormalization`` layers apply statistics set from
    outside, and the sub-networks ending at each such layer's input (topological order)."""

    def __init__(self, network):
        import keras
        from keras import layers

        fixed_class = _fixed_statistics_layer_class()
        self.fixed = {}

        def clone(layer):
            if isinstance(layer, layers.GroupNormalization):
                self.fixed[layer.name] = fixed_class(layer)
                return self.fixed[layer.name]
            return layer  # shared, with its weights

        self.network = keras.models.clone_model(network, clone_function=clone)
        self.order = [layer.name for layer in network.layers
                      if isinstance(layer, layers.GroupNormalization)]
        self.prefixes = [keras.Model(self.network.inputs, self.fixed[name].input)
                         for name in self.order]

    def set_statistics(self, name: str, moments: _Moments):
        layer = self.fixed[name]
        mean, variance = moments.group(layer.groups)
        layer.mean.assign(mean.astype(np.float32))
        layer.variance.assign(variance.astype(np.float32))


class Tiler:
    """Runs a Keras network window by window over large images (see the module docstring)."""

    def __init__(self, network):
        if len(network.inputs) != 1:
            raise ValueError(f"{network.name}: tiling takes a one-input network; bind a "
                             "multi-style network to a style first (networks.bind_style)")
        self.network = network
        self.forward = keras_forward(network)
        self.geometry = network_geometry(network)
        self._statistics_network = None
        self._layerwise = None
        self.layerwise_reason = None  # why the network cannot run layer by layer, once tried

    @property
    def layerwise(self):
        """The network walked for layer-by-layer runs (``kperceptual.inference.layerwise``), or None where
        it cannot be (``layerwise_reason`` says why)."""
        if self._layerwise is None and self.layerwise_reason is None:
            from kperceptual.inference import layerwise

            try:
                self._layerwise = layerwise.LayerwiseNetwork(self.network)
            except layerwise.NotWalkable as e:
                self.layerwise_reason = str(e)
        return self._layerwise

    def plan_layers(self, height: int, width: int, room_bytes: float, tile: int = 0):
        """A ``layerwise.LayerPlan`` for an image within ``room_bytes`` of memory beyond the
        image buffers (``tile``: at most this side per tile, 0 automatic). Raises
        ``layerwise.NotWalkable`` (the network or this size cannot be walked) or
        ``layerwise.NotEnoughRoom`` (memory or temporary disk)."""
        from kperceptual.inference import layerwise

        if self.layerwise is None:
            raise layerwise.NotWalkable(self.layerwise_reason)
        return self.layerwise.plan(height, width, room_bytes, tile)

    def plan(self, height: int, width: int, tile: int, overlap: int = -1) -> TilePlan:
        """Windows of ``tile`` pixels overlapping by ``overlap`` (-1: twice the halo plus a
        blend band)."""
        if overlap < 0:
            overlap = automatic_overlap(self.geometry)
        return plan_tiles(height, width, tile, overlap, self.geometry)

    def check_tile(self, tile: int, overlap: int = -1):
        """Raises ValueError (``tile: ...``) where windows of ``tile`` pixels cannot overlap by
        ``overlap`` (-1: automatic) with room to spare, whatever the image."""
        overlap = automatic_overlap(self.geometry) if overlap < 0 else overlap
        side, overlap = aligned_tile(tile, overlap, self.geometry)
        if side <= overlap:
            raise ValueError(f"tile: {tile} must be larger than the windows' overlap of {overlap} "
                             "pixels (raise it, or lower tile_overlap)")

    def _windows(self, padded: np.ndarray, plan: TilePlan):
        for i, j in plan.windows:
            top, left = plan.rows.starts[i], plan.cols.starts[j]
            window = padded[top:top + plan.rows.size, left:left + plan.cols.size]
            yield i, j, top, left, window[None].astype(np.float32)

    def _fit_statistics(self, padded: np.ndarray, plan: TilePlan):
        if self._statistics_network is None:
            self._statistics_network = GlobalStatisticsNetwork(self.network)
        stats = self._statistics_network
        for name, prefix in zip(stats.order, stats.prefixes):
            run, moments = keras_forward(prefix), _Moments()
            for i, j, top, left, window in self._windows(padded, plan):
                features = run(window)[0]
                fy = features.shape[0] / plan.rows.size
                fx = features.shape[1] / plan.cols.size
                moments.add(features[round((plan.rows.cuts[i] - top) * fy):
                                     round((plan.rows.cuts[i + 1] - top) * fy),
                                     round((plan.cols.cuts[j] - left) * fx):
                                     round((plan.cols.cuts[j + 1] - left) * fx)])
            stats.set_statistics(name, moments)
        return keras_forward(stats.network)

    def run(self, image: np.ndarray, plan) -> np.ndarray:
        """The network's output for uint8 ``image`` (H, W, 3), window by window (a
        ``TilePlan``) or layer by layer (a ``layerwise.LayerPlan``): float32 (H*s, W*s, 3)."""
        if not isinstance(plan, TilePlan):
            return self.layerwise.run(image, plan)
        padded = pad_to_multiple(image, self.geometry.alignment)
        forward = self.forward
        if self.geometry.global_norms and len(plan.windows) > 1:
            forward = self._fit_statistics(padded, plan)
        output = None
        for i, j, top, left, window in self._windows(padded, plan):
            result = np.asarray(forward(window), np.float32)[0]
            scale = result.shape[0] / plan.rows.size
            if output is None:
                output = np.zeros((round(plan.height * scale), round(plan.width * scale), 3),
                                  np.float32)
            y0, y1, wy = plan.rows.weights(i, scale, output.shape[0])
            x0, x1, wx = plan.cols.weights(j, scale, output.shape[1])
            oy, ox = round(top * scale), round(left * scale)
            output[y0:y1, x0:x1] += (result[y0 - oy:y1 - oy, x0 - ox:x1 - ox]
                                     * wy[:, None, None] * wx[None, :, None])
        return output
