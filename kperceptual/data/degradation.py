"""The super-resolution degradation of Johnson et al. (2016): the low-resolution input that a
high-resolution image is reconstructed from. One definition for training pairs and for the
evaluation inputs ``kperceptual.evaluate`` makes when it is given no low-resolution folder.

    low_res = bicubic_downsample(gaussian_blur(high_res, sigma=1.0), factor)

numpy, scipy and Pillow only (no Keras, no TensorFlow). Pixels are RGB uint8; the blur is done in
float and the downsampled image rounded back to uint8, as a saved low-resolution file would be.
Pillow's bicubic filter (a = -0.5) widens its support when it shrinks an image, as MATLAB's
``imresize`` does, so a sharp image downsampled here matches the benchmark sets' ``LR_x4`` files
to within rounding.
"""

from __future__ import annotations

import numpy as np
from PIL import Image
from scipy import ndimage

from kperceptual.imaging import images

BLUR_SIGMA = 1.0
SCALES = (2, 3, 4, 8)  # what the benchmark sets and the paper use; any integer >= 2 works


def gaussian_blur(image: np.ndarray, sigma: float = BLUR_SIGMA) -> np.ndarray:
    """Gaussian blur of each channel of an (H, W, C) image, borders mirrored; float32 out."""
    image = np.asarray(image, np.float32)
    if sigma <= 0:
        return image
    return ndimage.gaussian_filter(image, sigma=(sigma, sigma, 0), mode="mirror", truncate=4.0)


def _resize_float(image: np.ndarray, height: int, width: int) -> np.ndarray:
    """Bicubic resize of a float (H, W, C) image channel by channel (Pillow's 'F' mode, so the
    blurred image is not rounded before it is shrunk)."""
    channels = [np.asarray(Image.fromarray(np.ascontiguousarray(image[..., c]), mode="F")
                           .resize((width, height), Image.Resampling.BICUBIC))
                for c in range(image.shape[-1])]
    return np.stack(channels, axis=-1)


def bicubic_upscale(low_res: np.ndarray, factor: int) -> np.ndarray:
    """The bicubic baseline: ``low_res`` (h, w, 3) uint8 -> (h * factor, w * factor, 3) uint8."""
    low_res = np.asarray(low_res)
    h, w = low_res.shape[:2]
    return images.resize(low_res, h * factor, w * factor)


def crop_to_multiple(image: np.ndarray, factor: int) -> np.ndarray:
    """Crops the bottom and right so both sides are multiples of ``factor``."""
    h, w = image.shape[:2]
    return image[: h - h % factor, : w - w % factor]


def degrade(high_res: np.ndarray, factor: int, sigma: float = BLUR_SIGMA) -> np.ndarray:
    """The paper's low-resolution input: blur (``sigma``), then bicubic downsampling by
    ``factor``. ``high_res`` is uint8 (H, W, 3) with H and W multiples of ``factor``
    (``crop_to_multiple``); returns uint8 (H / factor, W / factor, 3)."""
    high_res = np.asarray(high_res)
    h, w = high_res.shape[:2]
    if h % factor or w % factor:
        raise ValueError(f"a {w}x{h} image does not divide by {factor}; crop it first "
                         "(degradation.crop_to_multiple)")
    if h < factor or w < factor:
        raise ValueError(f"a {w}x{h} image is smaller than the factor {factor}")
    small = _resize_float(gaussian_blur(high_res, sigma), h // factor, w // factor)
    return np.clip(np.round(small), 0, 255).astype(np.uint8)


def random_patch(image: np.ndarray, size: int, rng: np.random.Generator,
                 flips: bool = True) -> np.ndarray:
    """A random ``size`` x ``size`` crop of ``image``, randomly flipped left-right and up-down.

    Images with a side under ``size`` are first enlarged (bicubic, aspect ratio kept) so the
    shorter side is ``size``: small images give a patch rather than an error."""
    image = np.asarray(image)
    h, w = image.shape[:2]
    if min(h, w) < size:
        scale = size / min(h, w)
        h, w = max(size, round(h * scale)), max(size, round(w * scale))
        image = images.resize(image, h, w)
    top = int(rng.integers(0, h - size + 1))
    left = int(rng.integers(0, w - size + 1))
    patch = image[top:top + size, left:left + size]
    if flips:
        if rng.random() < 0.5:
            patch = patch[:, ::-1]
        if rng.random() < 0.5:
            patch = patch[::-1]
    return np.ascontiguousarray(patch)


def training_pair(image: np.ndarray, patch_size: int, factor: int, rng: np.random.Generator,
                  sigma: float = BLUR_SIGMA) -> tuple[np.ndarray, np.ndarray]:
    """(low-res, high-res) uint8 patches for training: a random ``patch_size`` patch of
    ``image`` and its degradation. ``patch_size`` must be a multiple of ``factor``."""
    if patch_size % factor:
        raise ValueError(f"patch size {patch_size} is not a multiple of the factor {factor}")
    high_res = random_patch(image, patch_size, rng)
    return degrade(high_res, factor, sigma), high_res
