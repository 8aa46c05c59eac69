"""Image-quality metrics for super-resolution evaluation: PSNR and SSIM on the luma channel, and
LPIPS (VGG, v0.1).

Conventions (those of the SR benchmark codes Johnson et al. 2016 report against)
-------------------------------------------------------------------------------

* **Luma.** ``y_channel`` is ITU-R BT.601 studio-range luma as MATLAB's ``rgb2ycbcr`` computes
  it: ``Y = 16 + (65.481 R + 128.553 G + 24.966 B) / 255`` for R, G, B in [0, 255], so Y lies in
  [16, 235]. MATLAB's ``rgb2ycbcr`` on a uint8 image returns uint8, i.e. Y rounded to the nearest
  integer (halves away from zero); ``rounded=True`` does that, ``rounded=False`` keeps the
  exact value.
* **Border.** ``border`` pixels are cropped from each of the four sides of the luma image before
  anything is measured; the SR convention is ``border = scale factor``.
* **PSNR** ``= 10 log10(255^2 / MSE)`` of the cropped luma images, in float64 (``inf`` when they
  are equal).
* **SSIM** is Wang et al. (2004), as their ``ssim.m``: an 11 x 11 Gaussian window with sigma 1.5
  (normalised to sum 1), K1 = 0.01, K2 = 0.03, L = 255, 'valid' filtering (no padding), the mean
  of the SSIM map. ``ssim.m`` first downsamples images whose shorter side is 512 or more:
  ``f = max(1, round(min(H, W) / 256))``, a f x f box filter ('symmetric' borders, MATLAB's
  ``imfilter`` anchoring) and every f-th pixel (``downsample=True``). Many Python codes
  (BasicSR, scikit-image) do not downsample (``downsample=False``).

The default is the convention that reproduces the paper's bicubic x4 Set5 numbers (28.43 dB /
0.8114, Table 2 of Johnson et al. 2016): **exact (unrounded) float64 luma, PSNR and SSIM both on
it, border = scale, and SSIM without ``ssim.m``'s downsampling** -- the convention of the Python
SR codes (EDSR, BasicSR: ``bgr2ycbcr(..., only_y=True)`` in float, SSIM on the full image). The
check, with the Set5 ``HR`` / ``LR_x4`` files, ``degradation.bicubic_upscale`` (Pillow bicubic)
and the mean over the five images, gave::

    luma        SSIM downsampling   PSNR (dB)   SSIM
    exact       no                  28.4304     0.8111    <- the default: both within 0.001
    rounded     no                  28.4177     0.8101    (also in tolerance, further off)
    exact       yes (ssim.m)        28.4304     0.8252    (SSIM off by 0.014)
    rounded     yes (ssim.m)        28.4177     0.8244    (SSIM off by 0.013)

(PSNR on exact luma with SSIM on rounded luma: 28.4304 / 0.8101. Only the 512 x 512 image is
downsampled, ``f = 2``; the others have ``f = 1``.) ``tests/test_metrics.py`` checks the default
against the paper's numbers.

LPIPS (Zhang et al. 2018, VGG variant, linear heads v0.1) uses the frozen VGG16 of
``kperceptual.losses.loss_network`` with the torchvision weights (whose preprocessing equals LPIPS's
input scaling layer) and the heads of ``kperceptual.weights.lpips_heads``:
``sum over layers of the spatial mean of sum_c w_c (f1_hat - f2_hat)^2``, where ``f_hat`` is the
feature divided by its L2 norm over the channels (+1e-10). The computation uses ``keras.ops``
only (backend-neutral); results are numpy.

numpy and scipy for PSNR and SSIM; no TensorFlow imports here.
"""

from __future__ import annotations

import functools

import numpy as np
from scipy import ndimage

# The defaults: the convention matching the paper's bicubic x4 Set5 numbers (module docstring).
ROUND_Y = False
SSIM_DOWNSAMPLE = False

PEAK = 255.0
SSIM_WINDOW_SIZE = 11
SSIM_SIGMA = 1.5
SSIM_K1 = 0.01
SSIM_K2 = 0.03

_Y_WEIGHTS = np.array([65.481, 128.553, 24.966], np.float64) / 255.0


# --------------------------------------------------------------------------------------------
# Luma, PSNR, SSIM


def y_channel(rgb, rounded: bool = False) -> np.ndarray:
    """BT.601 studio-range luma of an RGB image (H, W, 3) in [0, 255] (uint8 or float), as MATLAB's
    ``rgb2ycbcr``: ``16 + (65.481 R + 128.553 G + 24.966 B) / 255``. float64 (H, W) out;
    ``rounded=True`` rounds to the nearest integer (halves up) as ``rgb2ycbcr`` does on uint8."""
    rgb = np.asarray(rgb)
    if rgb.ndim != 3 or rgb.shape[-1] != 3:
        raise ValueError(f"y_channel expects an RGB image of shape (H, W, 3), got {rgb.shape}")
    y = 16.0 + rgb.astype(np.float64) @ _Y_WEIGHTS
    if rounded:
        y = np.floor(y + 0.5)
    return y


def _cropped_y_pair(output, reference, border: int, rounded: bool):
    output, reference = np.asarray(output), np.asarray(reference)
    if output.shape != reference.shape:
        raise ValueError(f"output and reference differ in shape: {output.shape} vs "
                         f"{reference.shape}")
    if output.ndim != 3 or output.shape[-1] != 3:
        raise ValueError(f"expected RGB images of shape (H, W, 3), got {output.shape}")
    border = int(border)
    if border < 0:
        raise ValueError(f"border must be >= 0, got {border}")
    h, w = output.shape[:2]
    if h - 2 * border <= 0 or w - 2 * border <= 0:
        raise ValueError(f"a border of {border} pixels leaves nothing of a {w}x{h} image")
    crop = (slice(border, h - border), slice(border, w - border))
    return (y_channel(output, rounded)[crop], y_channel(reference, rounded)[crop])


def psnr(image, reference, peak: float = PEAK) -> float:
    """PSNR in dB of two same-shape arrays, ``10 log10(peak^2 / MSE)`` in float64; inf if equal."""
    image = np.asarray(image, np.float64)
    reference = np.asarray(reference, np.float64)
    if image.shape != reference.shape:
        raise ValueError(f"shapes differ: {image.shape} vs {reference.shape}")
    mse = np.mean((image - reference) ** 2)
    return float("inf") if mse == 0 else float(10.0 * np.log10(peak ** 2 / mse))


def psnr_y(output, reference, border: int, *, rounded: bool = ROUND_Y) -> float:
    """PSNR (dB) of the luma of ``output`` against ``reference`` (RGB (H, W, 3) in [0, 255]) with
    ``border`` pixels cropped from each side (SR convention: the scale factor). See the module
    docstring for the conventions; ``rounded=True`` uses integer luma (MATLAB on uint8)."""
    a, b = _cropped_y_pair(output, reference, border, rounded)
    return psnr(a, b, PEAK)


def gaussian_window(size: int = SSIM_WINDOW_SIZE, sigma: float = SSIM_SIGMA) -> np.ndarray:
    """The 1-D normalised Gaussian; its outer product is MATLAB's ``fspecial('gaussian')``."""
    x = np.arange(size, dtype=np.float64) - (size - 1) / 2.0
    g = np.exp(-(x ** 2) / (2.0 * sigma ** 2))
    return g / g.sum()


def _filter_valid(image: np.ndarray, g: np.ndarray) -> np.ndarray:
    """Separable correlation with ``g`` x ``g``, the 'valid' part only (``filter2``'s 'valid')."""
    r = (len(g) - 1) // 2
    out = ndimage.correlate1d(image, g, axis=0, mode="reflect")
    out = ndimage.correlate1d(out, g, axis=1, mode="reflect")
    return out[r:image.shape[0] - r, r:image.shape[1] - r]


def ssim_downsample(image: np.ndarray, factor: int | None = None) -> np.ndarray:
    """``ssim.m``'s automatic downsampling: ``f = max(1, round(min(H, W) / 256))``, an f x f box
    filter (MATLAB ``imfilter(..., 'symmetric', 'same')``, anchored at ``floor((f + 1) / 2)``),
    then every f-th pixel from the first."""
    image = np.asarray(image, np.float64)
    if factor is None:
        factor = max(1, int(np.floor(min(image.shape) / 256.0 + 0.5)))  # MATLAB round
    if factor == 1:
        return image
    before = (factor + 1) // 2 - 1
    after = factor - 1 - before
    padded = np.pad(image, ((before, after), (before, after)), mode="symmetric")
    h, w = image.shape
    box = np.zeros_like(image)
    for i in range(factor):
        for j in range(factor):
            box += padded[i:i + h, j:j + w]
    box /= factor * factor
    return box[::factor, ::factor]


def ssim(image, reference, data_range: float = PEAK) -> float:
    """Mean SSIM (Wang et al. 2004) of two 2-D arrays: 11 x 11 Gaussian window (sigma 1.5),
    K1 = 0.01, K2 = 0.03, ``L = data_range``, 'valid' filtering, mean of the SSIM map."""
    x = np.asarray(image, np.float64)
    y = np.asarray(reference, np.float64)
    if x.shape != y.shape:
        raise ValueError(f"shapes differ: {x.shape} vs {y.shape}")
    if x.ndim != 2:
        raise ValueError(f"ssim expects 2-D (single-channel) images, got shape {x.shape}")
    if min(x.shape) < SSIM_WINDOW_SIZE:
        raise ValueError(f"SSIM needs images of at least {SSIM_WINDOW_SIZE}x{SSIM_WINDOW_SIZE} "
                         f"pixels (its window), got {x.shape[1]}x{x.shape[0]}")
    g = gaussian_window()
    c1 = (SSIM_K1 * data_range) ** 2
    c2 = (SSIM_K2 * data_range) ** 2
    mu_x, mu_y = _filter_valid(x, g), _filter_valid(y, g)
    sigma_xx = _filter_valid(x * x, g) - mu_x ** 2
    sigma_yy = _filter_valid(y * y, g) - mu_y ** 2
    sigma_xy = _filter_valid(x * y, g) - mu_x * mu_y
    ssim_map = (((2 * mu_x * mu_y + c1) * (2 * sigma_xy + c2))
                / ((mu_x ** 2 + mu_y ** 2 + c1) * (sigma_xx + sigma_yy + c2)))
    return float(ssim_map.mean())


def ssim_y(output, reference, border: int, *, rounded: bool = ROUND_Y,
           downsample: bool = SSIM_DOWNSAMPLE) -> float:
    """SSIM of the luma of ``output`` against ``reference`` (RGB (H, W, 3) in [0, 255]) with
    ``border`` pixels cropped from each side. Defaults: exact luma, no ``ssim.m``
    downsampling (the convention matching the paper; see the module docstring)."""
    a, b = _cropped_y_pair(output, reference, border, rounded)
    if downsample:
        a, b = ssim_downsample(a), ssim_downsample(b)
    return ssim(a, b, PEAK)


# --------------------------------------------------------------------------------------------
# LPIPS


# --------------------------------------------------------------------------------------------
# Pinned regions (blobs) and colour drift

# An output pixel is pinned when a channel sits at 0 or 255 after rounding; it counts as a blob
# pixel only where the reference (the high-res truth, or the content photo of a style output)
# is not within PIN_MARGIN levels of that same extreme in that channel.
PIN_MARGIN = 32
PIN_MAX_FRACTION = 0.001  # the bar: no connected region above 0.1% of the image


def pinned_mask(output, reference, margin: int = PIN_MARGIN, channels: str = "any") -> np.ndarray:
    """(H, W) bool: where ``output`` is pinned at 0 or 255 and ``reference`` (the same size)
    does not come within ``margin`` levels of that extreme. ``channels="any"``: some channel is
    pinned where the reference's same channel is not near it (super-resolution, whose truth is a
    photo); ``"all"``: the pixel is pure black or pure white where the reference is not near
    that extreme in every channel (style transfer, whose palettes may saturate one channel on
    purpose: candy's reds, mosaic's blues; the blobs users see are pure black or white)."""
    out = np.clip(np.round(np.asarray(output, np.float64)), 0, 255)
    ref = np.asarray(reference, np.float64)
    if out.shape != ref.shape:
        raise ValueError(f"output {out.shape} and reference {ref.shape} differ in size")
    if channels == "all":
        low = np.all(out <= 0, axis=-1) & ~np.all(ref <= margin, axis=-1)
        high = np.all(out >= 255, axis=-1) & ~np.all(ref >= 255 - margin, axis=-1)
        return low | high
    if channels != "any":
        raise ValueError(f"channels must be 'any' or 'all', got {channels!r}")
    low = (out <= 0) & (ref > margin)
    high = (out >= 255) & (ref < 255 - margin)
    return np.any(low | high, axis=-1)


def largest_pinned_region(output, reference, margin: int = PIN_MARGIN,
                          channels: str = "any") -> float:
    """The largest 8-connected region of ``pinned_mask`` as a fraction of the image (0 when
    there is none): a blob check. ``PIN_MAX_FRACTION`` is the bar a shipped model must pass."""
    mask = pinned_mask(output, reference, margin, channels)
    labels, count = ndimage.label(mask, structure=np.ones((3, 3), bool))
    if not count:
        return 0.0
    return float(np.bincount(labels.ravel())[1:].max() / mask.size)


# Windows in which ``grid_pattern`` averages each sub-pixel phase: 64 px hold 256 samples of
# each phase at x4, so the error's own spread adds about 1/16 of its size.
GRID_WINDOW = 64


def grid_pattern(output, reference, scale: int, window: int = GRID_WINDOW) -> float:
    """The part of an upscaled output's error that repeats with the low-res pixel grid, in
    levels: in each ``window`` x ``window`` block, the luma error (output - reference) averaged
    over every one of the ``scale`` x ``scale`` sub-pixel phases, less the block's mean error;
    the root mean square of those phase means over all blocks (``losses.perceptual.grid_loss``,
    the training term, on the luma). A lattice tied to the upsampling grid (the diamonds of an
    l_feat network) raises it; an error that does not care where the low-res pixel boundaries
    fall (blur, noise, misplaced detail) averages out to about (its spread) x scale / window.
    0 for identical images."""
    from keras import ops

    from kperceptual.losses.perceptual import grid_loss

    luma = [y_channel(output), y_channel(reference)]
    window = window // scale * scale
    rows, cols = luma[0].shape[0] // window, luma[0].shape[1] // window
    if not rows or not cols:
        raise ValueError(f"grid_pattern: the image ({luma[0].shape[1]}x{luma[0].shape[0]}) is "
                         f"smaller than one {window}-pixel window")
    out, ref = (y[None, :rows * window, :cols * window, None] for y in luma)
    return float(np.sqrt(ops.convert_to_numpy(grid_loss(out, ref, scale, window))[0]))


def mean_chroma_offset(rgb) -> tuple[float, float]:
    """Mean |Cb - 128| and |Cr - 128| (BT.601 full range, pixel levels) of an RGB image: both
    0 for a greyscale image."""
    x = np.asarray(rgb, np.float64)
    cb = -0.168736 * x[..., 0] - 0.331264 * x[..., 1] + 0.5 * x[..., 2]
    cr = 0.5 * x[..., 0] - 0.418688 * x[..., 1] - 0.081312 * x[..., 2]
    return float(np.mean(np.abs(cb))), float(np.mean(np.abs(cr)))


class LPIPS:
    """LPIPS distance (Zhang et al. 2018), VGG16 variant, linear heads v0.1.

    ``LPIPS()(a, b)``: ``a`` and ``b`` are RGB in [0, 255], uint8 or float, (H, W, 3) or
    (B, H, W, 3) of the same shape; returns a float for one image, a (B,) float64 array for a
    batch. 0 for identical images, symmetric, larger for more different images.
    """

    LAYERS = ("relu1_2", "relu2_2", "relu3_3", "relu4_3", "relu5_3")
    EPS = 1e-10

    def __init__(self):
        from kperceptual.losses import loss_network
        from kperceptual.losses import vgg16_weights as weights

        heads = weights.lpips_heads()
        missing = [name for name in self.LAYERS if name not in heads]
        if missing:
            raise ValueError(f"LPIPS heads missing for {missing}")
        self.network = loss_network.LossNetwork(layers=self.LAYERS, weights="torchvision")
        self.heads = {name: np.asarray(heads[name], np.float32).reshape(-1)
                      for name in self.LAYERS}

    def distance(self, a, b):
        """The computation, ``keras.ops`` only: (B, H, W, 3) x 2 -> (B,) tensor."""
        from keras import ops

        batch = ops.shape(a)[0]
        features = self.network(ops.concatenate([ops.cast(a, "float32"),
                                                 ops.cast(b, "float32")], axis=0))
        total = 0.0
        for name in self.LAYERS:
            f = features[name]
            f = f / (ops.sqrt(ops.sum(f * f, axis=-1, keepdims=True)) + self.EPS)
            diff = (f[:batch] - f[batch:]) ** 2
            weighted = ops.sum(diff * ops.convert_to_tensor(self.heads[name]), axis=-1)
            total = total + ops.mean(weighted, axis=(1, 2))
        return total

    def __call__(self, a, b):
        from keras import ops

        a, b = np.asarray(a), np.asarray(b)
        if a.shape != b.shape:
            raise ValueError(f"LPIPS inputs differ in shape: {a.shape} vs {b.shape}")
        single = a.ndim == 3
        if single:
            a, b = a[None], b[None]
        if a.ndim != 4 or a.shape[-1] != 3:
            raise ValueError("LPIPS expects RGB (H, W, 3) or (B, H, W, 3), got "
                             f"{a.shape[1:] if single else a.shape}")
        values = ops.convert_to_numpy(self.distance(a.astype(np.float32), b.astype(np.float32)))
        values = np.asarray(values, np.float64)
        return float(values[0]) if single else values


@functools.lru_cache(maxsize=1)
def _default_lpips() -> LPIPS:
    return LPIPS()


def lpips(a, b):
    """LPIPS (VGG, v0.1) of ``a`` against ``b`` with a cached model; see ``LPIPS``."""
    return _default_lpips()(a, b)


# --------------------------------------------------------------------------------------------
# Flicker: temporal stability on clips whose motion is known exactly

def camera_pan(image, size, frames: int, step=(1, 2), noise: float = 0.0, seed: int = 0):
    """A clip of a virtual camera moving over a still photo: ``frames`` windows of ``size``
    (an int, or (height, width)) whose top-left corner moves by ``step`` = (dy, dx) whole pixels
    a frame, starting where the whole path fits centred in ``image`` (H, W, 3). With ``noise``
    > 0, each frame gets its own Gaussian sensor noise of that standard deviation (levels).
    Returns float32 (frames, height, width, 3) in [0, 255]. Whole-pixel steps make the warp
    between two frames exact (``warping_error``)."""
    image = np.asarray(image, np.float32)
    height, width = (size, size) if np.isscalar(size) else size
    dy, dx = (int(s) for s in step)
    span_y, span_x = height + abs(dy) * (frames - 1), width + abs(dx) * (frames - 1)
    if frames < 2 or span_y > image.shape[0] or span_x > image.shape[1]:
        raise ValueError(f"a {frames}-frame pan of {height}x{width} windows by {dy, dx} a frame "
                         f"needs at least {span_y}x{span_x} pixels and 2 frames; the image has "
                         f"{image.shape[0]}x{image.shape[1]}")
    top = (image.shape[0] - span_y) // 2 + (abs(dy) * (frames - 1) if dy < 0 else 0)
    left = (image.shape[1] - span_x) // 2 + (abs(dx) * (frames - 1) if dx < 0 else 0)
    rng = np.random.default_rng(seed)
    clip = []
    for t in range(frames):
        y, x = top + t * dy, left + t * dx
        frame = image[y:y + height, x:x + width]
        if noise > 0:
            frame = np.clip(frame + rng.normal(0.0, noise, frame.shape), 0, 255)
        clip.append(frame)
    return np.stack(clip).astype(np.float32)


def warping_error(previous, current, step, border: int = 0) -> float:
    """Mean absolute difference in pixel levels between frame ``current`` and ``previous``
    warped by the camera's move ``step`` = (dy, dx) (``camera_pan``: what ``current`` shows at
    (i, j), ``previous`` showed at (i + dy, j + dx)), over the pixels both frames see, less
    ``border`` pixels at each edge of either frame (where a network's padding differs from
    frame to frame). 0 for a network that moves with the scene."""
    previous, current = np.asarray(previous, np.float64), np.asarray(current, np.float64)
    if previous.shape != current.shape:
        raise ValueError(f"frames differ in size: {previous.shape} vs {current.shape}")
    dy, dx = (int(s) for s in step)
    h, w = current.shape[:2]
    ys = slice(max(border, border - dy), min(h - border, h - border - dy))
    xs = slice(max(border, border - dx), min(w - border, w - border - dx))
    ours = current[ys, xs]
    theirs = previous[ys.start + dy:ys.stop + dy, xs.start + dx:xs.stop + dx]
    if ours.size == 0:
        raise ValueError(f"frames of {h}x{w} moved by {dy, dx} with border {border} share no "
                         "pixels")
    return float(np.mean(np.abs(ours - theirs)))


def flicker(outputs, step, border: int = 0) -> float:
    """The mean ``warping_error`` between consecutive frames of ``outputs`` (T, H, W, 3), a
    network's outputs for a ``camera_pan`` clip moving by ``step``: its flicker, in levels."""
    outputs = np.asarray(outputs)
    return float(np.mean([warping_error(outputs[t - 1], outputs[t], step, border)
                          for t in range(1, len(outputs))]))
