"""``kperceptual.inference``: colour preservation, strength, alpha, options."""

import numpy as np
import pytest

from helpers import psnr, with_border_margin
from kperceptual.imaging import color
from kperceptual.imaging import images
from kperceptual.inference import stylizer as inference


@pytest.fixture(scope="module")
def stylizer(tiny_style_model):
    return inference.Stylizer(tiny_style_model)


@pytest.fixture(scope="module")
def content(photos):
    return images.resize_long_side(photos["chelsea"], 96)


def test_strength_blends_with_the_input(tiny_style_model, stylizer, content):
    full = stylizer.image(content)
    plain = images.to_uint8(with_border_margin(stylizer.model.network, content))
    # The stylizer runs the network rewritten (serving.tf_rewrite): float rounding apart.
    assert np.abs(full.astype(int) - plain).max() <= 1
    np.testing.assert_array_equal(
        inference.stylize_image(tiny_style_model, content, strength=0.0), content)
    half = inference.stylize_image(tiny_style_model, content, strength=0.5).astype(int)
    assert np.abs(half - (full.astype(int) + content) / 2).max() <= 1


def test_preserve_color_keeps_the_chroma(tiny_style_model, stylizer, content):
    kept = inference.stylize_image(tiny_style_model, content, preserve_color=True)
    chroma = lambda rgb: color.rgb_to_ycbcr(rgb)[..., 1:]  # noqa: E731
    assert np.abs(chroma(kept) - chroma(content)).mean() < 1.5
    assert np.abs(chroma(stylizer.image(content)) - chroma(content)).mean() > 5
    # the stylised luminance (up to clipping where the kept chroma leaves the RGB gamut)
    assert np.abs(color.luminance(kept) - color.luminance(stylizer.image(content))).mean() < 1


def test_alpha_is_carried_and_resized(stylizer, content):
    alpha = np.zeros(content.shape[:2], np.uint8)
    alpha[:, content.shape[1] // 2:] = 255
    out = inference.stylize_image(stylizer.model, np.dstack([content, alpha]), max_size=48)
    assert out.shape == (32, 48, 4)
    assert out[:, :20, 3].max() == 0 and out[:, 28:, 3].min() == 255


@pytest.mark.parametrize("options,name", [({"strength": 1.5}, "strength"),
                                          ({"tile": -3}, "tile"),
                                          ({"tile_overlap": -2}, "tile_overlap"),
                                          ({"max_size": -1}, "max_size"),
                                          ({"memory_budget": "lots"}, "memory_budget"),
                                          ({"margin": -1}, "margin"),
                                          ({"margin": "wide"}, "margin")])
def test_bad_options_name_themselves(stylizer, options, name):
    with pytest.raises(inference.OptionError, match=f"^--{name}: "):
        inference.Stylizer(stylizer.model, **options)


def test_stylize_image_refuses_options_with_a_stylizer(stylizer, content):
    with pytest.raises(TypeError, match="strength"):
        inference.stylize_image(stylizer, content, strength=0.5)


@pytest.mark.parametrize("shape", [(1, 7), (4, 4), (3, 200), (1, 1)])
def test_images_below_the_minimum_side_keep_their_size(stylizer, shape):
    image = np.random.default_rng(0).integers(0, 256, (*shape, 3), dtype=np.uint8)
    assert stylizer.image(image).shape == (*shape, 3)
    frames = stylizer.frames([image, image[::-1]])
    assert [f.shape for f in frames] == [(*shape, 3)] * 2


def test_a_keras_only_tile_needs_a_network_and_room_for_the_overlap(stylizer):
    overlap = inference.tiling.automatic_overlap(stylizer.tiler.geometry)
    with pytest.raises(inference.OptionError, match=f"^--tile: {overlap} must be larger"):
        inference.Stylizer(stylizer.model, tile=overlap, tiling_mode="windows")
    inference.Stylizer(stylizer.model, tile=overlap + stylizer.tiler.geometry.alignment,
                       tiling_mode="windows")
    inference.Stylizer(stylizer.model, tile=overlap)  # layer by layer: tiles need no overlap
    no_network = inference.LoadedModel("plain", "plain.tflite", "tflite", stylizer.forward)
    with pytest.raises(inference.OptionError,
                       match="^--tile: tiling needs the Keras network, which plain.tflite"):
        inference.Stylizer(no_network, tile=512)


@pytest.mark.slow
@pytest.mark.parametrize("model", ["starry_night", "sr_x4_pixel"])
def test_half_precision_matches_float32_on_a_real_photo(photos, model):
    # Measured: bfloat16 46.6 / 62.3 dB, float16 58.7 / 70.9 dB at 384 px (style / SR x4).
    photo = images.resize_and_center_crop(photos["astronaut"], 96 if model[:2] == "sr" else 320)
    reference = inference.Stylizer(model, precision="float32").image(photo)
    for precision in ("bfloat16", "float16"):
        stylizer = inference.Stylizer(model, precision=precision)
        assert stylizer.model.network.compute_dtype == precision
        assert stylizer.model.network.get_layer("out_conv").compute_dtype == "float32"
        assert psnr(stylizer.image(photo), reference) >= 40, precision


def test_precision_auto_and_bad_values(tiny_style_model):
    from kperceptual.networks import precision

    auto = inference.Stylizer(tiny_style_model, precision="auto")
    native = precision.resolve_precision("auto") == "mixed_bfloat16"
    assert auto.precision == ("bfloat16" if native else "float32")
    with pytest.raises(inference.OptionError, match="--precision: unknown value 'int4'"):
        inference.Stylizer(tiny_style_model, precision="int4")
