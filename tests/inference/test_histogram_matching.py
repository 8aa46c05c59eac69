"""Histogram matching of a super-resolved image to its low-resolution input (Johnson et al.
2016)."""

import numpy as np
import pytest
import skimage.data as skimage_data
from skimage import exposure

from kperceptual.imaging import color


def _downsample(image, factor):
    """Block-mean downsampling (float64), cropping to a multiple of ``factor``."""
    h, w = image.shape[0] // factor * factor, image.shape[1] // factor * factor
    blocks = np.asarray(image[:h, :w], np.float64)
    return blocks.reshape(h // factor, factor, w // factor, factor, 3).mean(axis=(1, 3))


@pytest.fixture(scope="module")
def chelsea():
    return skimage_data.chelsea()  # (300, 451, 3) uint8


@pytest.fixture(scope="module")
def shifted_small(chelsea):
    """A 4x smaller, colour-shifted, contrast-changed and gamma-curved version of the photo."""
    small = _downsample(chelsea, 4) / 255.0
    small = small ** np.array([0.7, 1.0, 1.4])            # per-channel gamma
    small = 0.6 * small + np.array([0.3, 0.05, 0.15])     # lower contrast, colour cast
    return np.clip(small * 255.0, 0.0, 255.0)


def _cdf(channel):
    hist, _ = np.histogram(channel, bins=32, range=(0.0, 255.0))
    return np.cumsum(hist) / channel.size


def test_histograms_match_the_reference(chelsea, shifted_small):
    out = color.match_histograms(chelsea, shifted_small)
    assert out.shape == chelsea.shape and out.dtype == np.float32
    assert out.min() >= 0.0 and out.max() <= 255.0
    for c in range(3):
        before = np.abs(_cdf(chelsea[..., c]) - _cdf(shifted_small[..., c])).max()
        after = np.abs(_cdf(out[..., c]) - _cdf(shifted_small[..., c])).max()
        assert before > 0.2  # the reference really is different
        assert after < 0.02, (c, after)


def test_mean_and_std_match_the_reference(chelsea, shifted_small):
    out = color.match_histograms(chelsea, shifted_small).astype(np.float64)
    for c in range(3):
        assert abs(out[..., c].mean() - shifted_small[..., c].mean()) < 0.5
        ref_std = shifted_small[..., c].std()
        assert abs(out[..., c].std() - ref_std) < 0.02 * ref_std


@pytest.mark.parametrize("as_float", [False, True])
def test_order_is_preserved_and_ties_map_together(chelsea, shifted_small, as_float):
    image = chelsea.astype(np.float64) + 0.25 if as_float else chelsea
    out = color.match_histograms(image, shifted_small)
    for c in range(3):
        x, y = image[..., c].reshape(-1), out[..., c].reshape(-1)
        order = np.argsort(x, kind="stable")
        assert np.all(np.diff(y[order]) >= 0)  # monotone
        _, inverse = np.unique(x, return_inverse=True)
        inverse = inverse.reshape(-1)
        lo = np.full(inverse.max() + 1, np.inf)
        hi = np.full(inverse.max() + 1, -np.inf)
        np.minimum.at(lo, inverse, y)
        np.maximum.at(hi, inverse, y)
        assert np.array_equal(lo, hi)  # equal inputs give equal outputs


def test_x8_size_difference(chelsea):
    reference = np.clip(_downsample(chelsea, 8) * 0.8 + 20.0, 0, 255)
    out = color.match_histograms(chelsea, reference)
    assert out.shape == chelsea.shape
    for c in range(3):
        assert np.abs(_cdf(out[..., c]) - _cdf(reference[..., c])).max() < 0.03


def test_matching_to_itself_is_identity(chelsea):
    np.testing.assert_allclose(color.match_histograms(chelsea, chelsea), chelsea, atol=1e-4)
    rng = np.random.default_rng(0)
    image = rng.uniform(0, 255, (40, 50, 3))
    np.testing.assert_allclose(color.match_histograms(image, image), image, atol=1e-3)


def test_matching_to_a_smaller_copy_of_itself_is_near_identity(chelsea):
    small = _downsample(chelsea.astype(np.float64), 4)
    # block means smooth the histogram's tails slightly; the bulk stays put
    out = color.match_histograms(chelsea, small)
    assert np.abs(out - chelsea).mean() < 3.0


def test_constant_inputs_do_not_crash(chelsea, shifted_small):
    constant = np.full((32, 48, 3), 100, np.uint8)
    out = color.match_histograms(constant, shifted_small)
    assert out.shape == constant.shape and np.all(np.isfinite(out))
    for c in range(3):
        assert np.unique(out[..., c]).size == 1  # still constant
    out = color.match_histograms(chelsea, np.full((8, 8, 3), 42.0))
    np.testing.assert_array_equal(out, 42.0)


def test_float_and_uint8_agree(chelsea, shifted_small):
    np.testing.assert_allclose(color.match_histograms(chelsea, shifted_small),
                               color.match_histograms(chelsea.astype(np.float32), shifted_small),
                               atol=1e-4)


@pytest.mark.parametrize("shape", [(10, 10), (10, 10, 4), (10, 10, 1), (0, 10, 3), (10, 0, 3),
                                   (2, 10, 10, 3), (30,)])
def test_bad_shapes_raise(shape, chelsea):
    bad = np.zeros(shape, np.float32)
    with pytest.raises(ValueError, match=r"\(H, W, 3\)"):
        color.match_histograms(bad, chelsea)
    with pytest.raises(ValueError, match=r"\(H, W, 3\)"):
        color.match_histograms(chelsea, bad)


@pytest.mark.parametrize("dtype", ["uint8", "float"])
def test_agrees_with_skimage(chelsea, shifted_small, dtype):
    if dtype == "uint8":  # skimage needs the same integer dtype on both sides
        image, reference = chelsea, np.round(shifted_small).astype(np.uint8)
    else:
        image, reference = chelsea.astype(np.float64) + 0.5, shifted_small
    ours = color.match_histograms(image, reference)
    theirs = exposure.match_histograms(image, reference, channel_axis=-1)
    assert np.abs(ours - theirs).mean() < 1.0
    if theirs.dtype == np.uint8:  # skimage casts its result back to uint8 (truncating)
        assert np.all((ours - theirs >= -1e-4) & (ours - theirs < 1.0))
    else:
        np.testing.assert_allclose(ours, theirs, atol=1e-3)


def test_large_image():
    rng = np.random.default_rng(1)
    image = rng.integers(0, 256, (2000, 2000, 3), dtype=np.uint8)
    reference = rng.uniform(50, 200, (250, 250, 3))
    out = color.match_histograms(image, reference)
    assert out.shape == image.shape and out.dtype == np.float32
    assert 50.0 <= out.min() and out.max() <= 200.0
