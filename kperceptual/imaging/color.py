"""Colour spaces for colour preservation: luminance and chroma of RGB images (numpy, no framework).

Full-range ITU-R BT.601 YCbCr (the JPEG convention): ``Y`` is the luminance a stylisation may
change, ``Cb, Cr`` the chroma a user may want to keep. Images are float or uint8 ``(..., 3)`` RGB
in [0, 255]; results are float64.

Colour preservation follows Gatys et al., "Controlling Perceptual Factors in Neural Style
Transfer" (CVPR 2017), luminance-only transfer: stylise the luminance, keep the content's chroma.

The module also holds the super-resolution post-processing of Johnson et al. (2016), histogram
matching of the network's output to the low-resolution input (``match_histograms``).
"""

from __future__ import annotations

import numpy as np

_RGB_TO_YCBCR = np.array([[0.299, 0.587, 0.114],
                          [-0.168736, -0.331264, 0.5],
                          [0.5, -0.418688, -0.081312]])
_YCBCR_TO_RGB = np.linalg.inv(_RGB_TO_YCBCR)
_CHROMA_OFFSET = np.array([0.0, 128.0, 128.0])


def rgb_to_ycbcr(rgb) -> np.ndarray:
    """RGB [0, 255] -> full-range YCbCr (Y in [0, 255], Cb and Cr centred on 128)."""
    return np.asarray(rgb, np.float64) @ _RGB_TO_YCBCR.T + _CHROMA_OFFSET


def ycbcr_to_rgb(ycbcr) -> np.ndarray:
    """Inverse of ``rgb_to_ycbcr``; not clipped."""
    return (np.asarray(ycbcr, np.float64) - _CHROMA_OFFSET) @ _YCBCR_TO_RGB.T


def luminance(rgb) -> np.ndarray:
    """Y of an RGB image, shape ``(..., )``."""
    return np.asarray(rgb, np.float64) @ _RGB_TO_YCBCR[0]


def grey(rgb) -> np.ndarray:
    """The luminance as a three-channel grey RGB image (what the loss network sees of it)."""
    return np.repeat(luminance(rgb)[..., None], 3, axis=-1)


def match_luminance(source, reference) -> np.ndarray:
    """``source``'s grey image with its luminance shifted and scaled to ``reference``'s mean and
    standard deviation, so the style's brightness and contrast do not override the content's."""
    y_source, y_reference = luminance(source), luminance(reference)
    scale = y_reference.std() / max(y_source.std(), 1e-6)
    y = (y_source - y_source.mean()) * scale + y_reference.mean()
    return np.repeat(np.clip(y, 0.0, 255.0)[..., None], 3, axis=-1)


def preserve_color(content, stylised) -> np.ndarray:
    """The stylised image's luminance with the content's chroma; RGB clipped to [0, 255].

    ``content`` and ``stylised`` have the same height and width.
    """
    content, stylised = np.asarray(content), np.asarray(stylised)
    if content.shape != stylised.shape:
        raise ValueError(f"content {content.shape} and stylised {stylised.shape} images differ "
                         "in shape")
    ycbcr = rgb_to_ycbcr(content)
    ycbcr[..., 0] = luminance(stylised)
    return np.clip(ycbcr_to_rgb(ycbcr), 0.0, 255.0)


def _check_rgb(name, array) -> np.ndarray:
    array = np.asarray(array)
    if array.ndim != 3 or array.shape[-1] != 3 or array.size == 0:
        raise ValueError(f"{name} must be a non-empty (H, W, 3) RGB image, got shape "
                         f"{array.shape}")
    return array


def _match_channel(values: np.ndarray, reference: np.ndarray) -> np.ndarray:
    """``values`` (1-D) remapped so their distribution is ``reference``'s (1-D)."""
    ref_unique, ref_counts = _unique_counts(reference)
    ref_quantiles = np.cumsum(ref_counts) / reference.size
    if values.dtype == np.uint8:  # no sort needed: a 256-entry lookup table
        counts = np.bincount(values, minlength=256)
        quantiles = np.cumsum(counts) / values.size
        table = np.interp(quantiles, ref_quantiles, ref_unique.astype(np.float64))
        return table[values]
    unique, inverse, counts = np.unique(values, return_inverse=True, return_counts=True)
    quantiles = np.cumsum(counts) / values.size
    mapped = np.interp(quantiles, ref_quantiles, ref_unique.astype(np.float64))
    return mapped[inverse.reshape(-1)]


def _unique_counts(values: np.ndarray):
    """The sorted distinct values of a 1-D array and how often each occurs."""
    if values.dtype == np.uint8:
        counts = np.bincount(values, minlength=256)
        present = np.flatnonzero(counts)
        return present, counts[present]
    return np.unique(values, return_counts=True)


def match_histograms(image, reference) -> np.ndarray:
    """``image`` with each RGB channel remapped so its distribution equals ``reference``'s.

    Exact quantile matching, channel by channel: each distinct value of the image's channel goes to
    the reference's value at the same quantile (the fraction of pixels at or below it), linearly
    interpolated between the reference's quantiles. Equal inputs give equal outputs and the order of
    values is kept (the map is monotone). ``image`` and ``reference`` are uint8 or float
    ``(H, W, 3)`` RGB in [0, 255] and may differ in height and width (for super-resolution the
    reference is the low-resolution input, the image the x4 or x8 output). Returns float32 in
    [0, 255] of ``image``'s shape. Agrees with ``skimage.exposure.match_histograms(...,
    channel_axis=-1)`` (which truncates to uint8 for uint8 input). A constant image channel maps to
    the reference's maximum in that channel (every pixel is at quantile 1).
    """
    image = _check_rgb("image", image)
    reference = _check_rgb("reference", reference)
    out = np.empty(image.shape, np.float32)
    for c in range(3):
        matched = _match_channel(image[..., c].reshape(-1), reference[..., c].reshape(-1))
        out[..., c] = matched.reshape(image.shape[:2])
    return np.clip(out, 0.0, 255.0, out=out)
