"""Colour spaces for colour preservation (full-range BT.601 YCbCr)."""

import numpy as np
import pytest

from kperceptual.imaging import color


def test_known_colours():
    ycbcr = color.rgb_to_ycbcr(np.array([[255, 255, 255], [0, 0, 0], [255, 0, 0], [0, 0, 255]]))
    np.testing.assert_allclose(ycbcr[0], [255, 128, 128], atol=1e-3)
    np.testing.assert_allclose(ycbcr[1], [0, 128, 128], atol=1e-3)
    np.testing.assert_allclose(ycbcr[2], [76.245, 84.972, 255.5], atol=1e-3)
    np.testing.assert_allclose(ycbcr[3, 0], 29.07, atol=1e-3)


def test_round_trip(photos):
    rgb = photos["coffee"].astype(np.float64)
    np.testing.assert_allclose(color.ycbcr_to_rgb(color.rgb_to_ycbcr(rgb)), rgb, atol=1e-6)


def test_preserve_color_keeps_content_chroma_and_stylised_luminance(photos):
    content = photos["coffee"]
    stylised = np.roll(photos["coffee"], 50, axis=1)[..., ::-1]  # other colours and layout
    kept = color.preserve_color(content, stylised)
    inside = (kept > 1).all(-1) & (kept < 254).all(-1)  # not clipped
    assert inside.mean() > 0.5
    np.testing.assert_allclose(color.rgb_to_ycbcr(kept)[inside][:, 1:],
                               color.rgb_to_ycbcr(content)[inside][:, 1:], atol=1e-6)
    np.testing.assert_allclose(color.luminance(kept)[inside], color.luminance(stylised)[inside],
                               atol=1e-6)


def test_match_luminance_takes_reference_statistics(photos):
    matched = color.match_luminance(photos["astronaut"], photos["coffee"])
    y = matched[..., 0]
    assert np.array_equal(matched[..., 0], matched[..., 2])  # grey
    target = color.luminance(photos["coffee"])
    assert abs(y.mean() - target.mean()) < 2.0
    assert abs(y.std() - target.std()) < 2.0


def test_preserve_color_rejects_mismatched_shapes(photos):
    with pytest.raises(ValueError, match="differ in shape"):
        color.preserve_color(photos["coffee"], photos["chelsea"])
