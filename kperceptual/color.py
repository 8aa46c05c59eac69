"""Colour spaces for colour preservation: luminance and chroma of RGB images (numpy, no framework).

Full-range ITU-R BT.601 YCbCr (the JPEG convention): ``Y`` is the luminance a stylisation may
change, ``Cb, Cr`` the chroma a user may want to keep. Images are float or uint8 ``(..., 3)`` RGB
in [0, 255]; results are float64.

Colour preservation follows Gatys et al., "Controlling Perceptual Factors in Neural Style
Transfer" (CVPR 2017), luminance-only transfer: stylise the luminance, keep the content's chroma.
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
