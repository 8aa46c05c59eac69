"""Applying and exporting a multi-style network: Stylizer and stylize --style (names, mixes,
all styles in one batch, one-line errors), exact tiling of a bound style, SavedModel signatures
and TFLite files with a style input or fixed to one style, each against the Keras network."""

import os
import subprocess
import sys

import keras
import numpy as np
import pytest
import tensorflow as tf

from helpers import REPO, psnr, with_border_margin
from kperceptual.serving import tf_saved_model
from kperceptual.serving import tf_tflite
from kperceptual.imaging import images
from kperceptual.inference import stylizer as inference
from kperceptual.inference import tiling
from kperceptual.serving.litert import TFLiteModel
from helpers import STYLES, randomise_styles, assert_one_line_errors, small


@pytest.fixture(scope="module")
def multi(tmp_path_factory):
    """A tiny three-style network with distinct styles, saved as zoo.keras: (network, path)."""
    network = randomise_styles(small(3, name="zoo"))
    path = str(tmp_path_factory.mktemp("zoo") / "zoo.keras")
    network.save(path)
    return network, path


def keras_output(network, batch, weights):
    """The network's output for each image and its style weights, with its border margin."""
    weights = np.broadcast_to(np.asarray(weights, np.float32), (len(batch), network.num_styles))
    return np.stack([with_border_margin(network, image, w) for image, w in zip(batch, weights)])


def one_hot(i, n=3):
    return np.eye(n, dtype=np.float32)[i]


def test_stylizer_binds_a_style_or_a_mix(multi, photos):
    network, path = multi
    photo = images.resize_and_center_crop(photos["chelsea"], 40)
    for spec, weights in (("wave", one_hot(1)), ("starry_night:0.7,udnie:0.3", [0.7, 0, 0.3])):
        stylizer = inference.Stylizer(path, style=spec)
        expected = images.to_uint8(keras_output(network, photo[None], weights)[0])
        assert np.abs(stylizer.image(photo).astype(int) - expected).max() <= 1, spec
    assert inference.Stylizer(path, style="wave").model.name == "zoo_wave"
    assert inference.Stylizer(path, style="starry_night:0.7,udnie:0.3").model.name == \
        "zoo_starry_night0.7-udnie0.3"


def test_stylizer_style_errors_are_one_line(multi, tiny_style_model):
    _, path = multi
    with pytest.raises(inference.OptionError, match="^--style: unknown style 'mosaic'; this "
                                                    "network has: starry_night, wave, udnie$"):
        inference.Stylizer(path, style="mosaic")
    with pytest.raises(inference.OptionError, match="^--style: .*zoo.keras has 3 styles; choose"):
        inference.Stylizer(path)
    with pytest.raises(inference.OptionError, match="^--style: .* has one style; --style is for "
                                                    "multi-style networks$"):
        inference.Stylizer(tiny_style_model, style="wave")


def test_all_styles_in_one_batch_match_each_style(multi, photos):
    network, path = multi
    photo = images.resize_and_center_crop(photos["coffee"], 36)
    outputs = inference.Stylizer(path, style=0).all_styles(photo)
    assert list(outputs) == list(STYLES)
    for i, name in enumerate(STYLES):
        expected = images.to_uint8(keras_output(network, photo[None], one_hot(i))[0])
        assert np.abs(outputs[name].astype(int) - expected).max() <= 1, name


def test_a_bound_style_tiles_exactly_and_an_unbound_network_is_refused(multi, photos):
    network, path = multi
    photo = images.resize_long_side(photos["astronaut"], 150)
    whole = inference.Stylizer(path, style="wave:0.5,udnie:0.5").image(photo)
    tiled = inference.Stylizer(path, style="wave:0.5,udnie:0.5", tile=96, tile_overlap=48)
    out = tiled.image(photo)
    assert tiled.last_plan is not None and len(tiled.last_plan.windows) > 1
    assert psnr(out, whole) >= 40
    with pytest.raises(ValueError, match="bind a multi-style network to a style first"):
        tiling.Tiler(network)


def test_saved_model_takes_style_weights_or_an_index(multi, photos, tmp_path):
    network, _ = multi
    version = tf_saved_model.export_saved_model(network, str(tmp_path), "zoo")
    loaded = tf.saved_model.load(version)
    batch = np.stack([images.resize_and_center_crop(photos[n], 40)
                      for n in ("astronaut", "coffee")])
    weights = np.array([[0, 0, 1], [0.25, 0.75, 0]], np.float32)
    expected = images.to_uint8(keras_output(network, batch, weights))
    for name, dtype in (("serving_default", tf.uint8), ("serving_float", tf.float32)):
        out = loaded.signatures[name](images=tf.constant(batch, dtype),
                                      style_weights=tf.constant(weights))["outputs"].numpy()
        assert np.abs(out.astype(int) - expected).max() <= 1, name
    out = loaded.signatures["serving_style_index"](
        images=tf.constant(batch), style=tf.constant([2, 1], tf.int32))["outputs"].numpy()
    by_index = images.to_uint8(keras_output(network, batch, one_hot([2, 1])))
    assert np.abs(out.astype(int) - by_index).max() <= 1
    png = loaded.signatures["serving_bytes"](
        image_bytes=tf.constant([tf.io.encode_png(batch[0]).numpy()]),
        style_weights=tf.constant(weights[:1]))["png_bytes"].numpy()
    assert np.abs(images.decode_image(png[0]).astype(int) - expected[0]).max() <= 1
    run = tf_saved_model.load_saved_model(version)
    assert np.abs(run(batch, weights).astype(int) - expected).max() <= 1
    with pytest.raises(ValueError, match="multi-style model; give style weights"):
        run(batch)
    assert keras.saving.load_model(os.path.join(version, "assets", "network.keras")
                                   ).style_names == STYLES


@pytest.mark.slow
def test_tflite_with_a_style_input_and_fixed_to_one_style(multi, photos, tmp_path):
    network, _ = multi
    photo = images.resize_and_center_crop(photos["chelsea"], 32)[None].astype(np.float32)
    (tmp_path / "any.tflite").write_bytes(tf_tflite.convert_tflite(network, "none"))
    (tmp_path / "wave.tflite").write_bytes(
        tf_tflite.convert_tflite(network, "none", style_weights=one_hot(1)))
    with_input = TFLiteModel(str(tmp_path / "any.tflite"))
    fixed = TFLiteModel(str(tmp_path / "wave.tflite"))
    assert with_input.num_styles == 3 and fixed.num_styles == 1
    mix = np.array([0.5, 0, 0.5], np.float32)
    np.testing.assert_allclose(with_input(photo, mix), keras_output(network, photo, mix),
                               atol=0.05)
    np.testing.assert_allclose(fixed(photo), keras_output(network, photo, one_hot(1)), atol=0.05)
    # A .tflite file names its styles by index.
    stylizer = inference.Stylizer(str(tmp_path / "any.tflite"), style="2")
    expected = images.to_uint8(keras_output(network, photo, one_hot(2))[0])
    assert np.abs(stylizer.image(photo[0].astype(np.uint8)).astype(int) - expected).max() <= 1
    with pytest.raises(ValueError, match="needs one style fixed"):
        tf_tflite.convert_tflite(network, "int8", calibration=[photo])


def run_module(module, args, cwd):
    env = dict(os.environ, PYTHONPATH=REPO, TF_CPP_MIN_LOG_LEVEL="3")
    return subprocess.run([sys.executable, "-m", module, *args], cwd=cwd, env=env,
                          capture_output=True, text=True)


@pytest.mark.slow
def test_stylize_cli_style_names_mixes_and_all(multi, photos, tmp_path):
    _, path = multi
    images.write_image(str(tmp_path / "cat.png"), images.resize_long_side(photos["chelsea"], 48))
    result = run_module("kperceptual.stylize", [f"--model={path}", "--style=all",
                                                "--output=out", "cat.png"], tmp_path)
    assert result.returncode == 0, result.stderr
    assert sorted(os.listdir(tmp_path / "out")) == sorted(f"cat_zoo_{n}.png" for n in STYLES)
    result = run_module("kperceptual.stylize", [f"--model={path}", "--style=wave:0.3,udnie:0.7",
                                                "--output=out", "cat.png"], tmp_path)
    assert result.returncode == 0, result.stderr
    assert (tmp_path / "out" / "cat_zoo_wave0.3-udnie0.7.png").is_file()


STYLE_ERRORS = [
    (["--style=mosaic"], "--style: unknown style 'mosaic'; this network has: starry_night, "
                         "wave, udnie"),
    ([], "--style: {model} has 3 styles; choose one"),
    (["--style=wave", "--model={single}"], "--style: {single} has one style; --style is for "
                                           "multi-style networks"),
]


@pytest.mark.slow
def test_stylize_cli_style_errors_are_one_line(multi, tiny_style_model, tmp_path, photos):
    """Every case in one process, the first also as the real command
    (helpers.assert_one_line_errors)."""
    _, path = multi
    images.write_image(str(tmp_path / "cat.png"), images.resize_long_side(photos["chelsea"], 32))
    cases = []
    for args, message in STYLE_ERRORS:
        args = [a.format(single=tiny_style_model) for a in args]
        if not any(a.startswith("--model") for a in args):
            args.append(f"--model={path}")
        cases.append((args + ["cat.png"], message.format(model=path, single=tiny_style_model)))
    assert_one_line_errors("stylize", cases, tmp_path)


@pytest.mark.slow
def test_export_cli_fixes_a_style_and_refuses_unknown_ones(multi, tmp_path):
    _, path = multi
    result = run_module("kperceptual.export", [f"--model={path}", "--format=tflite",
                                               "--style=udnie", "--export_dir=out"], tmp_path)
    assert result.returncode == 0, result.stderr
    assert TFLiteModel(str(tmp_path / "out" / "zoo_none.tflite")).num_styles == 1
    result = run_module("kperceptual.export", [f"--model={path}", "--style=mosaic"], tmp_path)
    assert result.returncode == 2 and result.stderr.strip().splitlines()[-1] == (
        "kperceptual.export: --style: unknown style 'mosaic'; this network has: starry_night, "
        "wave, udnie")
