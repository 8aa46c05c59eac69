"""Apply a trained transformation network to images: what ``python -m kperceptual.stylize``
does, as functions.

    from kperceptual.inference import stylizer as inference
    from kperceptual.imaging import images

    rgb, alpha = images.read_image_and_alpha("photo.png")
    out = inference.stylize_image("starry_night", rgb, max_size=2048, memory_budget="4G",
                                  preserve_color=True, strength=0.8)   # uint8 (H, W, 3)

    stylizer = inference.Stylizer("runs/starry_night/starry_night.keras", memory_budget="4G")
    out = stylizer.image(rgba)      # (H, W, 4) in: alpha carried to (H', W', 4) out

    zoo = inference.Stylizer("zoo", style="starry_night:0.7,wave:0.3")  # a multi-style network
    outs = inference.Stylizer("zoo", style="wave").all_styles(rgb)  # {style name: uint8 image}

A multi-style network needs ``style``: a style name, an index, or a mix (``networks.style_weights``);
it is bound to it (``networks.bind_style``), so tiling and video work as for any network. A
multi-style ``.tflite`` file records no names: its styles are named by index (``style="2"``).

A model is a ``models.LoadedModel``, a Keras network, or what ``models.load_model`` takes (a name
in ``savedmodels/``, a ``.keras`` file, a SavedModel folder, a ``.tflite`` file). The output's
size is the network's (a style network keeps the size, a super-resolution one multiplies it);
``strength`` blends with the input (bicubic-upscaled for super-resolution). Images with a side
under ``MIN_SIDE`` (16) pixels are padded to it and the output cropped back; a fixed-size
``.tflite`` model takes only its size (InputError otherwise).

Memory: an image runs whole when the estimate below fits ``memory_budget``, else tiled (it
needs the Keras network, so ``.tflite`` files and SavedModels without ``assets/network.keras``
refuse images that need tiling). A network with whole-image (instance) normalisation runs layer
by layer (``layerwise``: each stage once over the whole image in tiles, activations in memory
or in temporary files, exact statistics, about one pass's arithmetic); one the layer-by-layer
executor cannot walk (a warning says why), one without whole-image statistics, or
``tiling_mode="windows"`` runs window by window (``tiling``, exact, one pass per normalisation
layer). Estimate of the peak resident memory, in bytes, for ``P`` input pixels (``P * s^2``
output pixels) run in windows of ``T`` pixels (``T = P`` untiled):

    resident now + 6 P + 16 P s^2 + T * (64 + 4.5 * widest activation in bytes per input pixel)

6 bytes: the decoded image and its padded copy (uint8); 16: the float32 output or blend
accumulator and the uint8 result; the last term is the forward pass, calibrated by peak RSS
measurements (``tiling.FORWARD_BYTES_BASE`` and ``FORWARD_ACTIVATION_FACTOR``; about 1.2 kB
per pixel for the default network). Layer by layer, the run gets what the budget leaves after
resident memory, 6 P and the float32 output (12 P s^2; ``Stylizer.layer_room``): one tile's
working set and the activations held in memory (the rest on disk); the uint8 result is made
after it has freed them.
"""

from __future__ import annotations

import dataclasses
import math
import os
import re
import resource
import sys

import numpy as np

from kperceptual.imaging import color
from kperceptual.imaging import images
from kperceptual import networks
from kperceptual.inference import tiling
from kperceptual.inference import layerwise
from kperceptual.choices import HISTOGRAM_MATCH, INFERENCE_PRECISIONS
from kperceptual.inference.loading import LoadedModel, keras_forward, load_model
from kperceptual import errors

IMAGE_BYTES_PER_INPUT_PIXEL = 6
IMAGE_BYTES_PER_OUTPUT_PIXEL = 16
# Rows of output finished (colour preservation, strength, uint8) at a time, to bound memory.
FINISH_ROWS = 256
# Images with a side below this are padded (symmetric reflection, bottom and right) to it and
# their output cropped back: every network here needs more than its reflection pads (3 in
# PadToMultiple, 4 in the first 9x9 conv), and 16 also leaves two stride-2 levels 4 pixels.
MIN_SIDE = 16
_UNITS = {"": 1, "K": 2 ** 10, "M": 2 ** 20, "G": 2 ** 30, "T": 2 ** 40}
TILING_MODES = ("auto", "layers", "windows")


class OptionError(errors.FlagError):
    """A bad option: ``OptionError("strength", "must be in [0, 1]")`` reads
    ``--strength: must be in [0, 1]``."""


class MemoryBudgetError(errors.InputError):
    """An image cannot be processed within the memory budget; the message says why."""


class InputError(errors.InputError):
    """The model cannot take an image (a fixed-size model, or the network failed on it); the
    message says why in one line, without the file's name (callers add it)."""


def _model_errors() -> tuple[type[BaseException], ...]:
    errors = (ValueError, RuntimeError)
    tf = sys.modules.get("tensorflow")
    errors_module = getattr(tf, "errors", None)
    return errors + ((errors_module.OpError,) if errors_module is not None else ())


def parse_memory_size(text) -> int:
    """``4G``, ``512M``, ``1.5GiB``, ``800MB`` or a number of bytes -> bytes (K, M, G, T are
    powers of 1024)."""
    if isinstance(text, (int, float)) and not isinstance(text, bool):
        value, unit = float(text), ""
    else:
        match = re.fullmatch(r"\s*(\d+(?:\.\d*)?)\s*([KMGT]?)(?:I?B)?\s*", str(text).upper())
        if not match:
            raise OptionError("memory_budget", f"expected a size such as 4G or 512M, got {text!r}")
        value, unit = float(match.group(1)), match.group(2)
    size = int(value * _UNITS[unit])
    if size <= 0:
        raise OptionError("memory_budget", f"must be positive, got {text!r}")
    return size


def format_bytes(n: float) -> str:
    return f"{n / 2 ** 30:.1f} GiB" if n >= 2 ** 30 else f"{n / 2 ** 20:.0f} MiB"


def resident_bytes() -> int:
    """This process's resident memory now (Linux ``/proc``; else its peak so far)."""
    try:
        with open("/proc/self/statm") as f:
            return int(f.read().split()[1]) * os.sysconf("SC_PAGE_SIZE")
    except (OSError, ValueError, IndexError):
        peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
        return peak if sys.platform == "darwin" else peak * 1024


def automatic_memory_budget() -> int:
    """What the process holds now plus 80% of the memory the system has available."""
    try:
        with open("/proc/meminfo") as f:
            available = next(int(line.split()[1]) * 1024 for line in f
                             if line.startswith("MemAvailable:"))
    except (OSError, StopIteration, ValueError):
        available = 4 * 2 ** 30
    return resident_bytes() + int(0.8 * available)


def check_options(max_size: int = 0, tile: int = 0, tile_overlap: int = -1,
                  strength: float = 1.0, batch_size: int = 1, tiling_mode: str = "auto"):
    """Raises OptionError naming the first bad option."""
    if tiling_mode not in TILING_MODES:
        raise OptionError("tiling_mode", f"unknown value {tiling_mode!r}; expected one of "
                          f"{', '.join(TILING_MODES)}")
    if max_size < 0:
        raise OptionError("max_size", f"must not be negative, got {max_size}")
    if tile < 0:
        raise OptionError("tile", f"must be 0 (automatic) or a side in pixels, got {tile}")
    if tile_overlap < -1:
        raise OptionError("tile_overlap", f"must be -1 (automatic) or pixels, got {tile_overlap}")
    if not (math.isfinite(strength) and 0.0 <= strength <= 1.0):
        raise OptionError("strength", f"must be in [0, 1], got {strength}")
    if batch_size < 1:
        raise OptionError("batch_size", f"must be at least 1, got {batch_size}")


def as_loaded_model(model, models_dir: str | None = None) -> LoadedModel:
    """A LoadedModel from a LoadedModel, a Keras network or a ``models.load_model`` spec."""
    if isinstance(model, LoadedModel):
        return model
    if isinstance(model, (str, os.PathLike)):
        return load_model(os.fspath(model), models_dir)
    return LoadedModel(model.name, "", "keras", keras_forward(model), model)


def resolve_inference_precision(precision: str) -> str:
    """``auto`` -> ``bfloat16`` where the hardware computes it natively, else ``float32``;
    raises OptionError for an unknown value."""
    from kperceptual.networks.precision import resolve_precision

    if precision not in INFERENCE_PRECISIONS:
        raise OptionError("precision", f"unknown value {precision!r}; expected one of "
                          f"{', '.join(INFERENCE_PRECISIONS)}")
    if precision == "auto":
        return "bfloat16" if resolve_precision("auto") == "mixed_bfloat16" else "float32"
    return precision


def with_model_precision(model: LoadedModel, precision: str) -> LoadedModel:
    """``model`` computing in ``precision`` (see ``networks.with_precision``); a model without
    its Keras network runs as it is in float32, and half precision there is an OptionError."""
    if precision == "float32":
        return model
    if model.network is None:
        raise OptionError("precision", f"{precision} needs the Keras network, which "
                          f"{model.path or model.name} does not carry (use float32)")
    network = networks.with_precision(model.network, precision)
    return dataclasses.replace(model, fn=keras_forward(network), network=network)


def model_style_names(model: LoadedModel) -> tuple[str, ...]:
    """The styles of a model: a multi-style Keras network's names; a multi-style ``.tflite``
    file's indices ("0", "1", ...); () for a one-style model."""
    if model.network is not None:
        n = networks.num_styles(model.network)
        return networks.style_names(model.network) if n > 1 else ()
    n = int(getattr(model.fn, "num_styles", 1) or 1)
    return tuple(str(i) for i in range(n)) if n > 1 else ()


def style_label(names, weights) -> str:
    """A file-name-safe label of a style mix: ``wave``, or ``starry_night0.7-wave0.3``."""
    used = [(n, w) for n, w in zip(names, weights) if w > 0]
    if len(used) == 1:
        return used[0][0]
    return "-".join(f"{n}{w:.3g}" for n, w in used)


def bind_model_style(model: LoadedModel, style) -> LoadedModel:
    """``model`` fixed to ``style`` (see the module docstring), named ``<model>_<style label>``;
    raises OptionError (``style: ...``) for a missing, unknown or unwanted style."""
    names = model_style_names(model)
    where = model.path or model.name
    if not names:
        if style is None:
            return model
        raise OptionError("style", f"{where} has one style; --style is for multi-style networks")
    if style is None or style == "":
        raise OptionError("style", f"{where} has {len(names)} styles; choose one (or a mix such as "
                          f"{names[0]}:0.5,{names[1]}:0.5): {', '.join(names)}")
    try:
        weights = networks.style_weights(names, style)
    except ValueError as e:
        raise OptionError("style", f"{e}") from None
    name = f"{model.name}_{style_label(names, weights)}"
    if model.network is not None:
        bound = networks.bind_style(model.network, weights)
        return LoadedModel(name, model.path, model.kind, keras_forward(bound), bound)
    return LoadedModel(name, model.path, model.kind, _WithStyle(model.fn, weights))


class _WithStyle:
    """A multi-style model function (a ``.tflite`` file's) with its style weights fixed."""

    def __init__(self, fn, weights):
        self.fn, self.weights = fn, weights
        self.input_size = getattr(fn, "input_size", None)

    def __call__(self, pixels):
        return self.fn(pixels, self.weights)


def resolve_margin(margin, network) -> int:
    """The margin a Stylizer pads with: ``"auto"`` is ``networks.border_margin(network)`` (0
    without a Keras network: exported graphs and ``.tflite`` files pad inside)."""
    if margin == "auto":
        return networks.border_margin(network) if network is not None else 0
    try:
        value = int(margin)
    except (TypeError, ValueError):
        value = -1
    if value < 0 or str(margin).strip() != str(value):
        raise OptionError("margin", f"{margin!r} must be auto or a whole number >= 0")
    return value


def histogram_match_enabled(setting, network) -> bool:
    """Whether the paper's histogram matching applies: ``setting`` is True/"on", False/"off" or
    "auto" (on for super-resolution networks trained with l_feat, as in the paper)."""
    if setting in (True, False):
        return setting
    if setting not in HISTOGRAM_MATCH:
        raise OptionError("histogram_match", f"{setting!r}; expected one of "
                          f"{', '.join(HISTOGRAM_MATCH)}")
    if setting == "auto":
        return getattr(network, "trained_loss", None) == "feat"
    return setting == "on"


def finish(stylised, content: np.ndarray, alpha: np.ndarray | None = None,
           preserve_color: bool = False, strength: float = 1.0,
           histogram_match: bool = False) -> np.ndarray:
    """uint8 output from the network's float output: each channel's histogram matched to the
    input's (``histogram_match``, the paper's super-resolution post-processing), the content's
    chroma kept (``preserve_color``), blended with the content (``strength`` < 1) and ``alpha``
    appended; the content and alpha are resized (bicubic) to the output's size first. Row block
    by row block, so a large image needs no float64 copies of itself."""
    if histogram_match:
        stylised = color.match_histograms(stylised, content)
    height, width = stylised.shape[:2]
    channels = 3 if alpha is None else 4
    out = np.empty((height, width, channels), np.uint8)
    if preserve_color or strength < 1.0:
        content = images.resize(content, height, width)
    if alpha is not None:
        out[..., 3] = images.resize(alpha, height, width)
    for top in range(0, height, FINISH_ROWS):
        rows = slice(top, top + FINISH_ROWS)
        block = np.asarray(stylised[rows], np.float64)
        if preserve_color:
            block = color.preserve_color(content[rows], block)
        if strength < 1.0:
            block = strength * block + (1.0 - strength) * content[rows]
        out[rows, ..., :3] = images.to_uint8(block)
    return out


def _split_alpha(image) -> tuple[np.ndarray, np.ndarray | None]:
    image = np.asarray(image)
    if image.dtype != np.uint8:
        image = images.to_uint8(image)
    if image.ndim == 2:
        return np.repeat(image[..., None], 3, axis=-1), None
    if image.ndim != 3 or image.shape[-1] not in (3, 4):
        raise ValueError(f"expected an image (H, W), (H, W, 3) or (H, W, 4), got {image.shape}")
    return (image, None) if image.shape[-1] == 3 else (image[..., :3], image[..., 3])


class Stylizer:
    """A network with its options, ready to apply to images and video frames.

    Args:
        model: see the module docstring.
        max_size: if > 0, inputs are resized so their longer side is at most this.
        tile: window side in pixels (0: automatic, only when the image does not fit
            ``memory_budget`` whole).
        tile_overlap: overlap of neighbouring windows in pixels (-1: automatic, twice the
            network's receptive-field halo plus a 16-pixel blend band).
        memory_budget: peak resident memory to stay within: bytes or a size such as ``"4G"``
            (None: what the process holds plus 80% of the available memory).
        preserve_color: keep the content's chroma, transfer only luminance.
        strength: in [0, 1]; 1 is fully stylised, 0 the input.
        histogram_match: "auto" (on for super-resolution networks trained with l_feat, as in
            the paper), "on"/True or "off"/False: match each output channel's histogram to the
            input's.
        warn: called once with each warning line (default: printed to stderr).
        style: multi-style networks (required there, refused elsewhere): a style name, index
            or mix such as ``"starry_night:0.7,wave:0.3"``.
        precision: ``"float32"`` (default), ``"bfloat16"``, ``"float16"`` or ``"auto"``
            (bfloat16 where the hardware computes it natively, else float32); half precision
            needs the Keras network (a ``.keras`` file or a kperceptual SavedModel).
        tiling_mode: how an image that does not fit whole is tiled: ``"auto"`` (default: layer by
            layer for networks with whole-image normalisation, where they can be walked, else
            window by window), ``"layers"`` (layer by layer whenever tiled) or ``"windows"``
            (window by window, as before the layer-by-layer executor).
        margin: pixels of reflection added on every side of the input before the network and
            cropped from its output: ``"auto"`` (default: ``networks.border_margin``, 32 for a
            style network run from its Keras network, 0 for super-resolution networks and for
            exported graphs and ``.tflite`` files, which carry their own) or an int >= 0.
    """

    def __init__(self, model, *, max_size: int = 0, tile: int = 0, tile_overlap: int = -1,
                 memory_budget=None, preserve_color: bool = False, strength: float = 1.0,
                 histogram_match="auto", models_dir: str | None = None, warn=None,
                 style=None, precision: str = "float32", tiling_mode: str = "auto",
                 margin="auto"):
        check_options(max_size, tile, tile_overlap, strength, tiling_mode=tiling_mode)
        self.tiling_mode = tiling_mode
        self._warn = warn or (lambda line: print(line, file=sys.stderr))
        self._warned = set()
        self.memory_budget = (automatic_memory_budget() if memory_budget is None
                              else parse_memory_size(memory_budget))
        self.source_model = as_loaded_model(model, models_dir)
        bound = bind_model_style(self.source_model, style)
        self.precision = resolve_inference_precision(precision)
        if precision == "auto" and bound.network is None:
            self.precision = "float32"  # a graph or .tflite file runs as it was exported
        self.model = with_model_precision(bound, self.precision)
        self.max_size, self.tile, self.tile_overlap = max_size, tile, tile_overlap
        self.preserve_color, self.strength = preserve_color, strength
        network = self.model.network
        self.margin = resolve_margin(margin, self.source_model.network if network is not None
                                     else None)
        self.histogram_match = histogram_match_enabled(histogram_match, network)
        self.tiler = tiling.Tiler(network) if network is not None else None
        self.forward = self.tiler.forward if self.tiler else self.model.fn
        # (height, width) a fixed-size model (a .tflite file exported with an input size) takes.
        self.input_size = getattr(self.model.fn, "input_size", None) if not self.tiler else None
        self._scale = None
        self.last_plan = None  # the last image's plan (windows or layers), None: ran whole
        if tile:
            if self.tiler is None:
                raise OptionError("tile", f"tiling needs the Keras network, which "
                                  f"{self.model.path or self.model.name} does not carry")
            if self._layers_first():  # tiles need no overlap layer by layer
                if tile < layerwise.MIN_TILE:
                    raise OptionError("tile", f"{tile} must be larger: at least "
                                      f"{layerwise.MIN_TILE} pixels for a layer-by-layer run")
            else:
                try:
                    self.tiler.check_tile(tile, tile_overlap)
                except ValueError as e:
                    raise OptionError(*str(e).split(": ", 1)) from None
        if self.tiler and 0 <= tile_overlap < 2 * self.tiler.geometry.halo:
            self._warn(
                f"tile_overlap: {tile_overlap} is less than twice the network's receptive-field "
                f"halo ({self.tiler.geometry.halo}); tiles may show seams")

    @property
    def forward_bytes_per_pixel(self) -> float:
        return (self.tiler.geometry.forward_bytes_per_pixel if self.tiler
                else tiling.DEFAULT_FORWARD_BYTES_PER_PIXEL)

    @property
    def scale(self) -> float:
        """Output side / input side, from a small probe (1 for style networks)."""
        if self._scale is None:
            height, width = self.input_size or (32, 32)
            out = self._run(np.zeros((1, height, width, 3), np.float32))
            self._scale = out.shape[1] / height
        return self._scale

    def _run(self, batch: np.ndarray, plan=None) -> np.ndarray:
        """The network's float output for a float32 batch (or, with ``plan``, one uint8 image in
        windows); the model's own errors become one-line InputErrors."""
        try:
            if plan is not None:
                return self.tiler.run(batch, plan)
            return np.asarray(self.forward(batch))
        except _model_errors() as e:
            lines = str(e).strip().splitlines() or [type(e).__name__]
            raise InputError(f"the model failed on a {batch.shape[-2]}x{batch.shape[-3]} input: "
                             f"{lines[0]}") from e

    def estimate_bytes(self, height: int, width: int, window_pixels: int | None = None,
                       count: int = 1) -> float:
        """Estimated peak resident memory for ``count`` images of ``height`` x ``width`` run
        whole (``window_pixels`` None) or in windows of that many pixels (module docstring)."""
        pixels = height * width
        window = pixels if window_pixels is None else window_pixels
        return resident_bytes() + count * (
            IMAGE_BYTES_PER_INPUT_PIXEL * pixels
            + IMAGE_BYTES_PER_OUTPUT_PIXEL * pixels * self.scale ** 2
            + window * self.forward_bytes_per_pixel)

    def plan(self, height: int, width: int):
        """None to run the image whole, else a ``layerwise.LayerPlan`` (layer by layer) or a
        ``tiling.TilePlan`` (window by window); raises MemoryBudgetError."""
        if not self.tile and self.estimate_bytes(height, width) <= self.memory_budget:
            return None
        if self.tiler is None:
            raise MemoryBudgetError(
                f"needs about {format_bytes(self.estimate_bytes(height, width))} whole, over "
                f"the memory budget of {format_bytes(self.memory_budget)}, and tiling needs the "
                f"Keras network, which {self.model.path or self.model.name} does not carry (use "
                "its .keras file or a SavedModel exported by kperceptual, or a smaller max_size)")
        if self._layers_first():
            layers_plan = self._layer_plan(height, width)
            if layers_plan is not None:
                return layers_plan
        return self._window_plan(height, width)

    def _layers_first(self) -> bool:
        """Whether a tiled image is planned layer by layer first (``tiling_mode``)."""
        return self.tiler is not None and (
            self.tiling_mode == "layers" or (self.tiling_mode == "auto" and bool(
                self.tiler.geometry.global_norms)))

    def layer_room(self, height: int, width: int) -> float:
        """Memory a layer-by-layer run may use for its tiles and activations: the budget less
        what the process holds, the image (and its padded copy) and the float32 output (the
        uint8 result is made after the run has freed its tiles and activations, in their
        place)."""
        pixels = height * width
        return self.memory_budget - resident_bytes() - (
            IMAGE_BYTES_PER_INPUT_PIXEL * pixels + 12 * pixels * self.scale ** 2)

    def _layer_plan(self, height: int, width: int):
        """The layer-by-layer plan, or None (with a warning) where the network or the
        temporary disk does not allow it; raises MemoryBudgetError."""
        room = self.layer_room(height, width)
        try:
            return self.tiler.plan_layers(height, width, room, self.tile)
        except layerwise.NotWalkable as e:
            reason = str(e)
        except layerwise.NotEnoughRoom as e:
            if e.what == "memory":
                raise MemoryBudgetError(f"{e} (memory budget {format_bytes(self.memory_budget)}"
                                        "; raise it or lower max_size)") from None
            reason = str(e)
        if reason not in self._warned:
            self._warned.add(reason)
            passes = len(self.tiler.geometry.global_norms) + 1
            self._warn(f"tiling: window by window ({passes} passes), not layer by layer: "
                       f"{reason}")
        return None

    def _window_plan(self, height: int, width: int) -> tiling.TilePlan | None:
        side = self.tile
        if not side:
            room = self.memory_budget - self.estimate_bytes(height, width, window_pixels=0)
            side = int(math.sqrt(max(room, 0) / self.forward_bytes_per_pixel))
            overlap = (self.tile_overlap if self.tile_overlap >= 0
                       else tiling.automatic_overlap(self.tiler.geometry))
            smallest = 2 * overlap + self.tiler.geometry.alignment
            if side < smallest:
                need = self.estimate_bytes(height, width, window_pixels=smallest ** 2)
                raise MemoryBudgetError(
                    f"needs at least {format_bytes(need)} even in windows of {smallest} pixels; "
                    f"the memory budget is {format_bytes(self.memory_budget)} (raise it or lower "
                    "max_size)")
        try:
            plan = self.tiler.plan(height, width, side, self.tile_overlap)
        except ValueError as e:
            raise OptionError(*str(e).split(": ", 1)) from None
        return None if len(plan.windows) == 1 else plan

    def _prepare(self, image) -> tuple[np.ndarray, np.ndarray | None]:
        rgb, alpha = _split_alpha(image)
        if self.max_size and max(rgb.shape[:2]) > self.max_size:
            size = images.long_side_size(*rgb.shape[:2], self.max_size)
            rgb = images.resize(rgb, *size)
            alpha = None if alpha is None else images.resize(alpha, *size)
        if self.input_size and rgb.shape[:2] != self.input_size:
            raise InputError(f"the model takes only {self.input_size[1]}x{self.input_size[0]} "
                             f"inputs, not {rgb.shape[1]}x{rgb.shape[0]} (export with "
                             "--input_size=0 for any size)")
        return rgb, alpha

    def _padded(self, rgb: np.ndarray) -> np.ndarray:
        """``rgb`` padded to MIN_SIDE where a side is shorter, then by ``margin`` on every side
        (fixed-size models: as it is)."""
        height, width = rgb.shape[:2]
        if self.input_size:
            return rgb
        if min(height, width) < MIN_SIDE:
            rgb = np.pad(rgb, ((0, max(0, MIN_SIDE - height)), (0, max(0, MIN_SIDE - width)),
                               (0, 0)), mode="symmetric")
        top, left = self._margins(*rgb.shape[:2])
        return np.pad(rgb, ((top, top), (left, left), (0, 0)), mode="reflect")

    def _margins(self, height: int, width: int) -> tuple[int, int]:
        """The margin above and left of an image of ``height`` x ``width`` (at least MIN_SIDE):
        ``margin``, at most a side less one (as ``tf_saved_model.apply_with_margin``)."""
        return min(self.margin, height - 1), min(self.margin, width - 1)

    def _padded_size(self, height: int, width: int) -> tuple[int, int]:
        """The size ``_padded`` gives an image of ``height`` x ``width``."""
        if self.input_size:
            return height, width
        height, width = max(height, MIN_SIDE), max(width, MIN_SIDE)
        top, left = self._margins(height, width)
        return height + 2 * top, width + 2 * left

    def _crop(self, stylised: np.ndarray, rgb: np.ndarray) -> np.ndarray:
        """The output of ``_padded(rgb)`` cropped to ``rgb``'s part."""
        height, width = rgb.shape[:2]
        if stylised.shape[-3] == height * self.scale and stylised.shape[-2] == width * self.scale:
            return stylised
        top, left = (0, 0) if self.input_size else self._margins(max(height, MIN_SIDE),
                                                                     max(width, MIN_SIDE))
        top, left = round(top * self.scale), round(left * self.scale)
        return stylised[..., top:top + round(height * self.scale),
                        left:left + round(width * self.scale), :]

    def outputs(self, batch: np.ndarray) -> np.ndarray:
        """The network's float32 output for a float batch (B, H, W, 3) of pixels in [0, 255],
        padded (``margin``, ``MIN_SIDE``) and cropped back as images are, but untiled and
        unfinished (no blending, no uint8): what benchmarks score."""
        batch = np.asarray(batch, np.float32)
        padded = np.stack([self._padded(image) for image in batch])
        return self._crop(self._run(padded), batch[0])

    def _finish(self, stylised, content, alpha):
        return finish(stylised, content, alpha, self.preserve_color, self.strength,
                      self.histogram_match)

    def image(self, image) -> np.ndarray:
        """Stylises one uint8 image: (H, W), (H, W, 3) or (H, W, 4) with alpha; returns uint8
        (H', W', 3), or (H', W', 4) with the alpha resized along."""
        rgb, alpha = self._prepare(image)
        padded = self._padded(rgb)
        plan = self.last_plan = self.plan(*padded.shape[:2])
        if plan is None:
            stylised = self._run(padded[None].astype(np.float32))[0]
        else:
            stylised = self._run(padded, plan)
        return self._finish(self._crop(stylised, rgb), rgb, alpha)

    def all_styles(self, image) -> dict[str, np.ndarray]:
        """``image`` in every style of the (multi-style) network, as ``{style name: uint8}``:
        one batch through the network where it fits the memory budget (else one style at a
        time, tiled as needed)."""
        source = self.source_model
        names = model_style_names(source)
        if not names:
            raise OptionError("style", f"{source.path or source.name} has one style")
        rgb, alpha = self._prepare(image)
        padded = self._padded(rgb)
        n = len(names)
        if source.network is not None and not self.tile and self.estimate_bytes(
                *padded.shape[:2], count=n) <= self.memory_budget:
            batch = np.repeat(padded[None].astype(np.float32), n, axis=0)
            out = np.asarray(source.network.predict_on_batch(
                [batch, np.eye(n, dtype=np.float32)]))
            return {name: self._finish(self._crop(o, rgb), rgb, alpha)
                    for name, o in zip(names, out)}
        results = {}
        for i, name in enumerate(names):
            one = Stylizer(source, max_size=self.max_size, tile=self.tile,
                           tile_overlap=self.tile_overlap, memory_budget=self.memory_budget,
                           preserve_color=self.preserve_color, strength=self.strength,
                           histogram_match=self.histogram_match, style=i,
                           warn=self._warn, tiling_mode=self.tiling_mode)
            results[name] = one.image(image)
        return results

    def frames(self, frames) -> list[np.ndarray]:
        """Stylises same-sized frames, as one batch where it fits the memory budget."""
        prepared = [self._prepare(frame) for frame in frames]
        height, width = self._padded_size(*prepared[0][0].shape[:2])
        if self.tile or self.estimate_bytes(height, width, count=len(prepared)) > \
                self.memory_budget:
            return [self.image(frame) for frame in frames]
        batch = np.stack([self._padded(rgb) for rgb, _ in prepared]).astype(np.float32)
        stylised = self._crop(self._run(batch), prepared[0][0])
        return [self._finish(out, rgb, alpha) for out, (rgb, alpha) in zip(stylised, prepared)]


def stylize_image(model, image, **options) -> np.ndarray:
    """``Stylizer(model, **options).image(image)``; ``model`` may also be a Stylizer (then
    ``options`` must be empty: they are the Stylizer's own)."""
    if isinstance(model, Stylizer):
        if options:
            raise TypeError(f"stylize_image: {', '.join(sorted(options))} cannot be given with "
                            "a Stylizer, whose options are set when it is made; pass them to "
                            "Stylizer(...) instead")
        return model.image(image)
    return Stylizer(model, **options).image(image)
