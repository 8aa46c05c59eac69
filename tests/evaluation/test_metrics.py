"""SR evaluation metrics: luma, PSNR and SSIM (hand-computed cases, scikit-image cross-check, the
paper's bicubic x4 Set5 protocol check) and LPIPS properties."""

import math
import os

import numpy as np
import pytest

from helpers import SHARED_DATA, needs_shared
from kperceptual.data import degradation
from kperceptual.imaging import images
from kperceptual.evaluation import metrics

SET5 = os.path.join(SHARED_DATA, "sr", "Set5")
SET5_NAMES = [f"img_00{i}.png" for i in range(1, 6)]

# Johnson et al. 2016, Table 2: bicubic x4 on Set5.
PAPER_BICUBIC_X4_PSNR = 28.43
PAPER_BICUBIC_X4_SSIM = 0.8114


def gray(value, size=6):
    return np.full((size, size, 3), value, np.uint8)


@pytest.fixture(scope="module")
def set5():
    """[(HR, LR_x4)] uint8 pairs of Set5 from ../shared; fails if the folder is there but short."""
    missing = [os.path.join(SET5, sub, name) for sub in ("HR", "LR_x4") for name in SET5_NAMES
               if not os.path.isfile(os.path.join(SET5, sub, name))]
    if missing:
        pytest.fail("the Set5 protocol check needs the benchmark images; missing: "
                    + ", ".join(os.path.normpath(p) for p in missing))
    return [(images.read_image(os.path.join(SET5, "HR", n)),
             images.read_image(os.path.join(SET5, "LR_x4", n))) for n in SET5_NAMES]


@pytest.fixture(scope="module")
def lpips_model(vgg_weights_path):
    return metrics.LPIPS()


# ---------------------------------------------------------------------------------------------
# Luma


def test_y_channel_is_bt601_studio_range():
    rgb = np.array([[[0, 0, 0], [255, 255, 255]], [[255, 0, 0], [10, 20, 30]]], np.uint8)
    y = metrics.y_channel(rgb)
    assert y.dtype == np.float64 and y.shape == (2, 2)
    expected = [[16.0, 235.0],  # 81.48 and 31.59 below
                [16 + 65.481, 16 + (65.481 * 10 + 128.553 * 20 + 24.966 * 30) / 255]]
    np.testing.assert_allclose(y, expected, atol=1e-9)
    # Float input in [0, 255] gives the same; rounding gives MATLAB's uint8 rgb2ycbcr.
    np.testing.assert_allclose(metrics.y_channel(rgb.astype(np.float32)), expected, atol=1e-4)
    np.testing.assert_array_equal(metrics.y_channel(rgb, rounded=True),
                                  [[16, 235], [81, 32]])


def test_y_channel_refuses_non_rgb():
    with pytest.raises(ValueError, match=r"\(H, W, 3\)"):
        metrics.y_channel(np.zeros((4, 4)))


# ---------------------------------------------------------------------------------------------
# PSNR


def test_psnr_y_hand_computed_after_cropping_the_border():
    # Gray pixels: Y = 16 + v * 219 / 255. Inside the 1-pixel border the output is 10 grey
    # levels brighter; on the border it is wildly off, which cropping must ignore.
    reference = gray(100)
    output = gray(0)
    output[1:-1, 1:-1] = 110
    dy = 10 * 219 / 255
    expected = 10 * math.log10(255 ** 2 / dy ** 2)
    assert metrics.psnr_y(output, reference, border=1) == pytest.approx(expected, abs=1e-9)

    # Without cropping the 20 border pixels (out of 36) count, each 100 grey levels off.
    mse_all = (16 * dy ** 2 + 20 * (100 * 219 / 255) ** 2) / 36
    assert metrics.psnr_y(output, reference, border=0) == pytest.approx(
        10 * math.log10(255 ** 2 / mse_all), abs=1e-9)


def test_psnr_y_rounded_luma_hand_computed():
    # 16 + 100 * 219/255 = 101.88 -> 102; 16 + 110 * 219/255 = 110.47 -> 110: 8 levels apart.
    expected = 10 * math.log10(255 ** 2 / 8 ** 2)
    assert metrics.psnr_y(gray(110), gray(100), 1, rounded=True) == pytest.approx(expected)


def test_psnr_y_identical_is_infinite():
    image = np.random.default_rng(0).integers(0, 256, (8, 8, 3), dtype=np.uint8)
    assert metrics.psnr_y(image, image, 2) == float("inf")


@pytest.mark.parametrize("fn", [metrics.psnr_y, metrics.ssim_y])
def test_bad_shapes_and_borders_raise(fn):
    with pytest.raises(ValueError, match="differ in shape"):
        fn(gray(0, 16), gray(0, 20), 1)
    with pytest.raises(ValueError, match=r"\(H, W, 3\)"):
        fn(np.zeros((16, 16)), np.zeros((16, 16)), 1)
    with pytest.raises(ValueError, match="leaves nothing"):
        fn(gray(0, 6), gray(1, 6), 3)
    with pytest.raises(ValueError, match="border"):
        fn(gray(0, 16), gray(1, 16), -1)


# ---------------------------------------------------------------------------------------------
# SSIM


def test_ssim_identical_images_is_one(photos):
    image = photos["chelsea"][:64, :64]
    assert metrics.ssim_y(image, image, 4) == pytest.approx(1.0, abs=1e-12)


def test_ssim_constant_images_hand_computed():
    # Constant images have no variance, so SSIM = (2 mu_x mu_y + C1) / (mu_x^2 + mu_y^2 + C1).
    x, y = 16 + 50 * 219 / 255, 16 + 80 * 219 / 255
    c1 = (0.01 * 255) ** 2
    expected = (2 * x * y + c1) / (x ** 2 + y ** 2 + c1)
    assert metrics.ssim_y(gray(50, 20), gray(80, 20), 2) == pytest.approx(expected, abs=1e-12)


def test_ssim_matches_scikit_image(photos):
    from skimage.metrics import structural_similarity

    rng = np.random.default_rng(1)
    reference = photos["astronaut"][100:164, 150:230]
    noisy = np.clip(reference + rng.normal(0, 12, reference.shape), 0, 255).astype(np.uint8)
    a = metrics.y_channel(noisy)[3:-3, 3:-3]
    b = metrics.y_channel(reference)[3:-3, 3:-3]
    expected = structural_similarity(a, b, gaussian_weights=True, sigma=1.5,
                                     use_sample_covariance=False, data_range=255)
    assert metrics.ssim_y(noisy, reference, 3) == pytest.approx(expected, abs=1e-10)
    assert 0.3 < expected < 0.99


def test_ssim_border_cropping_matters():
    rng = np.random.default_rng(2)
    reference = rng.integers(0, 256, (40, 40, 3), dtype=np.uint8)
    output = reference.copy()
    output[:8] = output[-8:] = output[:, :8] = output[:, -8:] = 128  # a flat 8-pixel frame
    assert metrics.ssim_y(output, reference, 8) == pytest.approx(1.0, abs=1e-12)
    assert metrics.ssim_y(output, reference, 0) < 0.8
    # Cropping is exactly SSIM of the cropped luma.
    y_out, y_ref = metrics.y_channel(output), metrics.y_channel(reference)
    assert metrics.ssim_y(output, reference, 5) == pytest.approx(
        metrics.ssim(y_out[5:-5, 5:-5], y_ref[5:-5, 5:-5]), abs=1e-15)


def test_ssim_too_small_for_the_window_raises():
    with pytest.raises(ValueError, match="at least 11x11"):
        metrics.ssim_y(gray(0, 14), gray(1, 14), 2)


def test_ssim_downsample_is_box_filter_then_every_fth_pixel():
    image = np.arange(16, dtype=np.float64).reshape(4, 4)
    # MATLAB anchors an even 2x2 filter at its first tap: each output averages a 2x2 block.
    expected = [[(0 + 1 + 4 + 5) / 4, (2 + 3 + 6 + 7) / 4],
                [(8 + 9 + 12 + 13) / 4, (10 + 11 + 14 + 15) / 4]]
    np.testing.assert_allclose(metrics.ssim_downsample(image, 2), expected)
    # The automatic factor is round(min(H, W) / 256): 2 for 600, 1 for 300.
    assert metrics.ssim_downsample(np.zeros((600, 700))).shape == (300, 350)
    assert metrics.ssim_downsample(np.zeros((300, 700))).shape == (300, 700)


# ---------------------------------------------------------------------------------------------
# The protocol check: bicubic x4 on Set5 against the paper's numbers


@needs_shared("sr", "Set5")
def test_set5_bicubic_x4_matches_the_paper(set5):
    psnrs, ssims = [], []
    for high_res, low_res in set5:
        upscaled = degradation.bicubic_upscale(low_res, 4)
        assert upscaled.shape == high_res.shape
        psnrs.append(metrics.psnr_y(upscaled, high_res, border=4))
        ssims.append(metrics.ssim_y(upscaled, high_res, border=4))
    psnr, ssim = float(np.mean(psnrs)), float(np.mean(ssims))
    assert abs(psnr - PAPER_BICUBIC_X4_PSNR) <= 0.05, f"PSNR {psnr:.4f} dB"
    assert abs(ssim - PAPER_BICUBIC_X4_SSIM) <= 0.005, f"SSIM {ssim:.4f}"


# ---------------------------------------------------------------------------------------------
# LPIPS


def test_lpips_heads_are_non_negative_and_sized(vgg_weights_path):
    from kperceptual.losses import vgg16_weights as weights

    heads = weights.lpips_heads()
    sizes = {"relu1_2": 64, "relu2_2": 128, "relu3_3": 256, "relu4_3": 512, "relu5_3": 512}
    assert {k: v.shape for k, v in heads.items()} == {k: (c,) for k, c in sizes.items()}
    assert all((v >= 0).all() for v in heads.values())


@pytest.fixture(scope="module")
def lpips_images(set5):
    """A 128 x 128 crop of a Set5 HR image, its bicubic x4 reconstruction, and a lightly noisy
    copy (float)."""
    high_res, low_res = set5[0]
    hr = high_res[192:320, 192:320]
    bicubic = degradation.bicubic_upscale(low_res[48:80, 48:80], 4)
    noisy = np.clip(hr + np.random.default_rng(3).normal(0, 2, hr.shape), 0, 255)
    return hr, bicubic, noisy.astype(np.float32)


def test_lpips_identical_is_zero(lpips_model, lpips_images):
    hr, _, _ = lpips_images
    assert lpips_model(hr, hr) == pytest.approx(0.0, abs=1e-6)


def test_lpips_orders_degradations_and_is_symmetric(lpips_model, lpips_images):
    hr, bicubic, noisy = lpips_images
    d_bicubic = lpips_model(bicubic, hr)
    d_noisy = lpips_model(noisy, hr)
    assert isinstance(d_bicubic, float)
    assert d_bicubic > d_noisy > 0
    assert d_bicubic > 0.1  # bicubic x4 is clearly perceptually different
    assert lpips_model(hr, bicubic) == pytest.approx(d_bicubic, rel=1e-4, abs=1e-6)


def test_lpips_batch_gives_per_image_values(lpips_model, lpips_images):
    hr, bicubic, noisy = lpips_images
    values = lpips_model(np.stack([bicubic, noisy.astype(np.uint8), hr]),
                         np.stack([hr, hr, hr]))
    assert values.shape == (3,) and values.dtype == np.float64
    np.testing.assert_allclose(values[0], lpips_model(bicubic, hr), rtol=1e-4)
    assert values[2] == pytest.approx(0.0, abs=1e-6)
    with pytest.raises(ValueError, match="differ in shape"):
        lpips_model(hr, bicubic[:64])


def test_lpips_function_caches_its_model(vgg_weights_path, lpips_images):
    hr, bicubic, _ = lpips_images
    assert metrics.lpips(bicubic, hr) == pytest.approx(metrics.lpips(bicubic, hr))
    assert metrics._default_lpips() is metrics._default_lpips()


# Flicker on clips of a virtual camera over a photo (the motion, and so the warp, is exact).

@pytest.fixture(scope="module")
def photo():
    import skimage.data

    return skimage.data.astronaut().astype(np.float32)


@pytest.mark.parametrize("step", [(1, 2), (-3, 1), (0, -4)])
def test_a_network_that_moves_with_the_scene_does_not_flicker(photo, step):
    clip = metrics.camera_pan(photo, (48, 64), 6, step=step)
    assert clip.shape == (6, 48, 64, 3)
    assert metrics.flicker(clip, step) == 0.0  # the identity
    assert metrics.flicker(255 * (clip / 255) ** 0.5, step) == 0.0  # any pointwise function
    # The warp matters: measured with the wrong motion, the same clip "flickers".
    assert metrics.flicker(clip, (step[0] + 1, step[1])) > 5


def test_independent_noise_flickers_by_its_expected_amount():
    # Frames with independent N(0, s) noise: |a - b| has mean 2 s / sqrt(pi).
    flat = np.full((200, 200, 3), 128.0, np.float32)
    clip = metrics.camera_pan(flat, 64, 8, step=(2, 2), noise=6.0, seed=1)
    assert metrics.flicker(clip, (2, 2)) == pytest.approx(12 / math.sqrt(math.pi), rel=0.02)


def test_whole_frame_statistics_flicker_and_the_border_is_left_out(photo):
    # Each frame minus its own mean (what instance normalisation does to a network's features)
    # changes as the view changes: flicker. A network whose edge pixels alone change (padding)
    # flickers only inside the border.
    step = (2, 3)
    clip = metrics.camera_pan(photo, 96, 5, step=step)
    centred = clip - clip.mean(axis=(1, 2, 3), keepdims=True)
    assert metrics.flicker(centred, step) > 0.5
    edged = clip.copy()
    edged[:, :4] = edged[:, -4:] = edged[:, :, :4] = edged[:, :, -4:] = 0
    assert metrics.flicker(edged, step) > 1
    assert metrics.flicker(edged, step, border=4) == 0.0


def test_camera_pan_and_warping_error_refuse_what_cannot_be_measured(photo):
    with pytest.raises(ValueError, match="needs at least 512x1536"):
        metrics.camera_pan(photo, 512, 3, step=(0, 512))
    with pytest.raises(ValueError, match="differ in size"):
        metrics.warping_error(photo[:10], photo[:11], (0, 1))
    with pytest.raises(ValueError, match="share no pixels"):
        metrics.warping_error(photo[:10, :10], photo[:10, :10], (0, 10))


def test_style_blob_check_counts_pure_black_or_white_not_a_saturated_palette():
    # A bright sky (the content) and a style output over it: a pure-black disc is a blob; a
    # region of pure red (one channel at 0 and one at 255, a palette's colour) is not, in the
    # style check ("all" channels), though the per-channel check used for SR counts it; black
    # where the photo itself is black is never counted.
    sky = np.full((100, 100, 3), (150, 190, 235), np.uint8)
    sky[80:, :] = 5  # a dark foreground, as in the photo
    out = np.full_like(sky, 128)
    yy, xx = np.mgrid[:100, :100]
    out[(yy - 30) ** 2 + (xx - 30) ** 2 < 36] = 0  # a disc of 113 pixels: 1.13%
    out[40:60, 60:90] = (255, 0, 0)  # 600 pixels of pure red
    out[80:, :] = 0  # black where the photo is black
    disc = np.sum((yy - 30) ** 2 + (xx - 30) ** 2 < 36) / out[..., 0].size
    assert metrics.largest_pinned_region(out, sky, channels="all") == pytest.approx(disc)
    assert metrics.largest_pinned_region(out, sky) == pytest.approx(0.06)  # the red block
    out[(yy - 30) ** 2 + (xx - 30) ** 2 < 36] = 1  # one level off pure black: not pinned
    assert metrics.largest_pinned_region(out, sky, channels="all") == 0.0
    with pytest.raises(ValueError, match="channels must be"):
        metrics.pinned_mask(out, sky, channels="some")
