"""Super-resolution (the paper's Section 4.2): the network, the degradation, the training pairs,
training with l_feat and l_pixel, the train CLI's task checks and inference."""

import os
import subprocess
import sys

import keras
import numpy as np
import pytest
import tensorflow as tf

from helpers import REPO, SHARED_DATA, needs_shared, random_pixels
from kperceptual.data import sources as data
from kperceptual.data import degradation
from kperceptual.imaging import images
from kperceptual.inference import stylizer as inference
from kperceptual import networks
from kperceptual.training import trainer
from kperceptual import config as config_lib
from kperceptual.data import tf_pipeline

SET5 = os.path.join(SHARED_DATA, "sr", "Set5")


def tiny_sr(scale=4, loss=None, **kw):
    return networks.SuperResolutionNetwork(scale, filters=8, num_residual_blocks=1, loss=loss,
                                           **kw)


# -- the network ------------------------------------------------------------------------------
@pytest.mark.parametrize("scale", [4, 8])
def test_network_upscales_odd_sizes_by_its_scale_into_pixel_range(scale):
    net = tiny_sr(scale)
    out = np.asarray(net(random_pixels((2, 13, 20, 3))))
    assert out.shape == (2, 13 * scale, 20 * scale, 3)
    assert out.min() >= 0.0 and out.max() <= 255.0
    assert out.std() > 0  # not a constant image


def test_network_keras_file_round_trip(tmp_path):
    net = tiny_sr(8, loss="pixel", norm="instance")
    path = str(tmp_path / "sr.keras")
    net.save(path)
    loaded = keras.saving.load_model(path)
    assert isinstance(loaded, networks.SuperResolutionNetwork)
    assert (loaded.scale, loaded.trained_loss, loaded.filters, loaded.num_residual_blocks,
            loaded.norm) == (8, "pixel", 8, 1, "instance")
    x = random_pixels((1, 13, 20, 3), seed=1)
    np.testing.assert_array_equal(np.asarray(loaded(x)), np.asarray(net(x)))


def test_network_get_config_round_trip():
    net = tiny_sr(2, loss="feat", upsample="transpose", padding="zero")
    config = net.get_config()
    clone = networks.SuperResolutionNetwork.from_config(config)
    assert clone.get_config() == config
    assert (config["scale"], config["loss"], config["upsample"], config["padding"]) == (
        2, "feat", "transpose", "zero")
    clone.set_weights(net.get_weights())
    x = random_pixels((1, 10, 11, 3), seed=2)
    np.testing.assert_allclose(np.asarray(clone(x)), np.asarray(net(x)), atol=1e-4)


@pytest.mark.parametrize("kwargs", [{"scale": 3}, {"scale": 1}, {"scale": 0}, {"scale": 6},
                                    {"scale": 4, "loss": "l2"}, {"scale": 4, "norm": "layer"}])
def test_network_rejects_bad_arguments(kwargs):
    with pytest.raises(ValueError):
        networks.SuperResolutionNetwork(filters=8, num_residual_blocks=1, **kwargs)


# -- the degradation --------------------------------------------------------------------------
def test_degrade_shape_dtype_and_constant_image(photos):
    hr = images.resize_and_center_crop(photos["astronaut"], 96)[:64, :48]
    for factor in (2, 4, 8):
        lr = degradation.degrade(hr, factor)
        assert lr.shape == (64 // factor, 48 // factor, 3) and lr.dtype == np.uint8
    constant = np.empty((32, 40, 3), np.uint8)
    constant[...] = (7, 128, 251)
    np.testing.assert_array_equal(degradation.degrade(constant, 4),
                                  np.broadcast_to(constant[:8, :10], (8, 10, 3)))
    with pytest.raises(ValueError, match="does not divide"):
        degradation.degrade(hr[:63], 4)


@pytest.mark.parametrize("sigma", [1.0, 2.0])
def test_gaussian_blur_spreads_a_point_with_variance_sigma_squared(sigma):
    image = np.zeros((41, 45, 2), np.float32)
    image[20, 22, 0] = 1000.0
    blurred = degradation.gaussian_blur(image, sigma)
    assert blurred.dtype == np.float32 and blurred.shape == image.shape
    assert np.all(blurred[..., 1] == 0)  # channels are blurred separately
    b = blurred[..., 0].astype(np.float64)
    assert b.sum() == pytest.approx(1000.0, rel=1e-5)  # the blur keeps the total
    y, x = np.arange(41) - 20, np.arange(45) - 22
    rows, cols = b.sum(axis=1), b.sum(axis=0)
    assert (rows * y).sum() / b.sum() == pytest.approx(0, abs=1e-6)  # centred
    assert (rows * y ** 2).sum() / b.sum() == pytest.approx(sigma ** 2, rel=0.01)
    assert (cols * x ** 2).sum() / b.sum() == pytest.approx(sigma ** 2, rel=0.01)
    np.testing.assert_array_equal(degradation.gaussian_blur(image, 0), image)


@needs_shared("sr", "Set5")
def test_sharp_bicubic_downsampling_matches_the_set5_benchmark_files():
    hr_dir, lr_dir = os.path.join(SET5, "HR"), os.path.join(SET5, "LR_x4")
    if not (os.path.isdir(hr_dir) and os.path.isdir(lr_dir)):
        pytest.fail(f"this test needs the Set5 benchmark: {hr_dir} and {lr_dir} (HR images and "
                    "their LR_x4 files) are missing")
    hr_files = images.list_images(hr_dir)
    assert hr_files, f"no images in {hr_dir}"
    for path in hr_files:
        lr_path = os.path.join(lr_dir, os.path.basename(path))
        assert os.path.isfile(lr_path), f"{lr_path}: missing (Set5 LR_x4 for {path})"
        hr = degradation.crop_to_multiple(images.read_image(path), 4)
        lr = images.read_image(lr_path)
        ours = degradation.degrade(hr, 4, sigma=0)
        assert ours.shape == lr.shape, path
        diff = np.abs(ours.astype(np.float64) - lr)
        assert diff.mean() < 0.5, (path, diff.mean())


def test_random_patch_of_a_small_image_and_training_pair_checks(photos):
    small = images.resize_and_center_crop(photos["chelsea"], 40)[:20, :30]
    rng = np.random.default_rng(0)
    patch = degradation.random_patch(small, 32, rng)
    assert patch.shape == (32, 32, 3) and patch.dtype == np.uint8
    low, high = degradation.training_pair(small, 32, 4, rng)
    assert low.shape == (8, 8, 3) and high.shape == (32, 32, 3)
    np.testing.assert_array_equal(low, degradation.degrade(high, 4))
    with pytest.raises(ValueError, match="not a multiple"):
        degradation.training_pair(photos["chelsea"], 30, 4, rng)


# -- the training pairs -----------------------------------------------------------------------
@pytest.fixture
def sr_folder(tmp_path, photos):
    root = tmp_path / "sr_photos"
    root.mkdir()
    images.write_image(str(root / "normal.png"),
                       images.resize_and_center_crop(photos["astronaut"], 80))
    images.write_image(str(root / "small.png"),
                       images.resize_and_center_crop(photos["coffee"], 40)[:20, :30])
    (root / "corrupt.jpg").write_bytes(b"\xff\xd8\xff\xe0 not really a jpeg")
    return root


def _batches(source, n, **kw):
    return [tuple(part.numpy() for part in batch) for batch in tf_pipeline.dataset(source, 2, **kw).take(n)]


def test_pairs_pipeline_shapes_skips_and_consistency(sr_folder):
    source = data.SuperResolutionPairs(str(sr_folder), 32, 4)
    batches = _batches(source, 4, seed=0)  # 8 good examples: 4 epochs over 2 good files
    assert len(batches) == 4
    for low, high in batches:
        assert low.shape == (2, 8, 8, 3) and high.shape == (2, 32, 32, 3)
        assert low.dtype == np.uint8 and high.dtype == np.uint8
        for lo, hi in zip(low, high):  # each pair is a patch and its degradation
            np.testing.assert_array_equal(lo, degradation.degrade(hi, 4))
    assert list(source.skipped) == [str(sr_folder / "corrupt.jpg")]


def test_pairs_pipeline_is_deterministic_under_seed(sr_folder):
    def run(seed, start_step=0):
        return _batches(data.SuperResolutionPairs(str(sr_folder), 32, 4), 3, seed=seed,
                        start_step=start_step)

    a, b, c = run(5, 2), run(5, 2), run(6, 2)
    for x, y in zip(a, b):
        np.testing.assert_array_equal(x[0], y[0])
        np.testing.assert_array_equal(x[1], y[1])
    assert any(not np.array_equal(x[1], y[1]) for x, y in zip(a, c))


# -- training ---------------------------------------------------------------------------------
@pytest.fixture(scope="module")
def relu2_2_net(vgg_weights_path):
    from kperceptual.losses import loss_network

    return loss_network.LossNetwork(("relu2_2",), weights="torchvision")


@pytest.mark.slow
@pytest.mark.parametrize("loss,terms", [("feat", {"loss", "content_loss"}),
                                        ("pixel", {"loss", "pixel_loss"})])
def test_a_few_steps_lower_the_objective(tmp_path, photos, relu2_2_net, loss, terms):
    # Adam at 1e-3 (the paper's): at 3e-3 the pixel loss drives the tanh head into saturation
    # (output stuck at 0/255, loss flat at its maximum) within a couple of steps.
    keras.utils.set_random_seed(0)
    config = config_lib.SuperResolutionConfig(
        scale=4, loss=loss, image_size=32, batch_size=2, learning_rate=1e-3,
        precision="float32", model_dir=str(tmp_path / "run"), export_dir=str(tmp_path / "exp"))
    assert config.loss_layers() == ("relu2_2",)
    t = trainer.build_trainer(config, tf.distribute.MirroredStrategy(["/cpu:0"]),
                              loss_net=relu2_2_net)
    assert isinstance(t.network, networks.SuperResolutionNetwork)
    assert (t.network.scale, t.network.trained_loss) == (4, loss)
    high = np.stack([images.resize_and_center_crop(photos[n], 32)
                     for n in ("astronaut", "chelsea")])
    low = np.stack([degradation.degrade(h, 4) for h in high])
    # One step per epoch: each epoch's logged loss is that step's loss, before its update.
    history = t.fit(tf.data.Dataset.from_tensors((low, high)).repeat(), steps_per_epoch=1,
                    epochs=15, shuffle=False, verbose=0).history
    assert set(history) == terms
    losses = history["loss"]
    assert all(np.isfinite(losses))
    assert np.mean(losses[-3:]) < 0.6 * losses[0], losses


@pytest.mark.slow
def test_train_end_to_end_writes_keras_file_and_saved_model(tmp_path, photo_folder):
    config = config_lib.SuperResolutionConfig(
        scale=2, loss="pixel", image_size=32, batch_size=2, steps=2, checkpoint_every=1,
        log_every=1, sample_every=1, precision="float32", train_data=str(photo_folder),
        model_dir=str(tmp_path / "run"), export_dir=str(tmp_path / "export"))
    assert config.name == "sr_x2_pixel"
    result = trainer.train(config, verbose=0)
    assert (result["steps"], result["trained_steps"]) == (2, 2)
    assert list(result["skipped_images"]) == [str(photo_folder / "broken.jpg")]
    network = keras.saving.load_model(result["keras_path"])
    assert isinstance(network, networks.SuperResolutionNetwork)
    assert (network.scale, network.trained_loss, network.norm) == (2, "pixel", "batch")
    assert np.asarray(network(random_pixels((1, 10, 13, 3)))).shape == (1, 20, 26, 3)
    assert os.path.isfile(os.path.join(result["export_path"], "saved_model.pb"))
    assert result["export_path"].endswith(os.path.join("sr_x2_pixel", "1"))


# -- the train CLI ----------------------------------------------------------------------------
@pytest.mark.parametrize("args,message", [
    (["--task=super_resolution", "--style_weight=1"],
     "--style_weight: not used by --task=super_resolution"),
    (["--task=super_resolution", "--scale=3"], "--scale: must be a power of two"),
    (["--task=style", "--scale=4", "--style_image=skimage:chelsea"],
     "--scale: not used by --task=style"),
    pytest.param([f"--flagfile={os.path.join(REPO, 'pipelines', 'sr_x4_feat.flags')}",
                  "--image_size=30"], "--image_size: 30 is not a multiple of --scale=4",
                 marks=needs_shared("train")),
    (["--task=super_resolution", "--scale=8", "--image_size=32", "--loss=pixel"],
     "--image_size: 32 / --scale=8 gives 4-pixel low-res patches"),
])
def test_train_cli_refuses_task_mismatches_in_one_line(tmp_path, args, message):
    env = dict(os.environ, PYTHONPATH=REPO, TF_CPP_MIN_LOG_LEVEL="3")
    # cwd: the repository, so that the flagfile's --train_data=../shared/data/train resolves
    result = subprocess.run(
        [sys.executable, "-m", "kperceptual.train", f"--model_dir={tmp_path / 'run'}",
         f"--export_dir={tmp_path / 'export'}", *args],
        cwd=REPO, env=env, capture_output=True, text=True, timeout=120)
    assert result.returncode == 2, result.stderr[-2000:]
    lines = [line for line in result.stderr.splitlines() if line.strip()]
    assert len(lines) == 1, result.stderr
    assert lines[0].startswith("kperceptual.train: ") and message in lines[0], lines[0]
    assert not (tmp_path / "run").exists()


# -- inference --------------------------------------------------------------------------------
def test_stylizer_upscales_and_histogram_matches_feat_models(photos):
    feat, pixel = tiny_sr(4, loss="feat"), tiny_sr(4, loss="pixel")
    assert inference.histogram_match_enabled("auto", feat) is True
    assert inference.histogram_match_enabled("auto", pixel) is False
    assert inference.histogram_match_enabled("on", pixel) is True
    assert inference.histogram_match_enabled("off", feat) is False
    with pytest.raises(inference.OptionError, match="histogram_match"):
        inference.histogram_match_enabled("maybe", feat)

    image = images.resize_and_center_crop(photos["chelsea"], 48)[10:30, 8:32]  # 20 x 24
    # The budget counts this process's resident memory, which a long test session grows past 2 GiB.
    matched = inference.Stylizer(feat, memory_budget="16G")
    assert matched.histogram_match and matched.scale == 4
    out = matched.image(image)
    assert out.shape == (80, 96, 3) and out.dtype == np.uint8
    in_means = image.reshape(-1, 3).mean(axis=0)
    np.testing.assert_allclose(out.reshape(-1, 3).mean(axis=0), in_means, atol=1.0)

    plain = inference.Stylizer(feat, memory_budget="16G", histogram_match="off")
    raw = plain.image(image)
    assert raw.shape == (80, 96, 3)
    assert np.abs(raw.reshape(-1, 3).mean(axis=0) - in_means).max() > 1.0  # it did something

    assert not inference.Stylizer(pixel, memory_budget="16G").histogram_match
    tiny = image[:12, :14]  # under inference.MIN_SIDE: padded, and the output cropped back
    assert inference.Stylizer(pixel, memory_budget="16G").image(tiny).shape == (48, 56, 3)


def test_compiling_a_network_keeps_what_it_was_trained_with():
    # keras.Model.compile sets ``self.loss``; the objective the network was trained with (which
    # decides the paper's histogram matching) must survive fine-tuning set-ups.
    net = tiny_sr(4, loss="feat")
    net.compile(optimizer="adam", loss="mse")
    assert net.trained_loss == "feat"
    assert inference.histogram_match_enabled("auto", net)
    assert net.get_config()["loss"] == "feat"


def test_a_run_folder_remembers_its_task(tmp_path):
    # A super-resolution run folder (also one written before the task was recorded, known by
    # its scale) refuses a style run, and the other way round; its own task resumes.
    run = tmp_path / "run"
    run.mkdir()
    (run / "config.json").write_text('{"scale": 4, "norm": "batch", "upsample": "resize", '
                                     '"padding": "reflect", "loss": "feat"}')
    sr = config_lib.SuperResolutionConfig(model_dir=str(run))
    trainer._check_model_dir(sr)  # resumes
    style = config_lib.StyleTrainingConfig("skimage:chelsea", model_dir=str(run), norm="batch")
    with pytest.raises(config_lib.ConfigError, match="holds a super_resolution network"):
        trainer._check_model_dir(style)
    other = tmp_path / "style_run"
    trainer._check_model_dir(config_lib.StyleTrainingConfig("skimage:chelsea",
                                                            model_dir=str(other)))
    with pytest.raises(config_lib.ConfigError, match="^--model_dir: .* holds a style network"):
        trainer._check_model_dir(config_lib.SuperResolutionConfig(model_dir=str(other)))
