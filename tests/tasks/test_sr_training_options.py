"""Super-resolution training options beyond the paper: global residual learning over bicubic,
the learning-rate schedule, the moving average of the weights, l1, the chroma term, --init_from,
and the pinned-region (blob) check."""

import json
import os

import keras
import numpy as np
import pytest
from PIL import Image

from helpers import SHARED_DATA, needs_shared, random_pixels
from kperceptual import config as config_lib
from kperceptual.data import degradation
from kperceptual.imaging import images
from kperceptual.losses import objective as objectives
from kperceptual.losses import perceptual as losses
from kperceptual.evaluation import metrics
from kperceptual import networks
from kperceptual.training import schedules
from kperceptual.training import checkpoints
from kperceptual.training import trainer

SET5 = os.path.join(SHARED_DATA, "sr", "Set5")


def pillow_bicubic_float(low, factor):
    """Pillow's bicubic upscaling in float ('F' mode, no rounding between the two passes)."""
    h, w = low.shape[:2]
    return np.stack([np.asarray(Image.fromarray(np.ascontiguousarray(low[..., c], np.float32),
                                                mode="F").resize((w * factor, h * factor),
                                                                 Image.Resampling.BICUBIC))
                     for c in range(low.shape[-1])], axis=-1)


# -- residual learning ------------------------------------------------------------------------
@pytest.mark.parametrize("factor", [2, 4, 8])
def test_bicubic_layer_is_pillows_bicubic_away_from_the_border(factor, photos):
    low = photos["chelsea"][::4, ::4][:37, :50].astype(np.float32)  # odd sizes
    out = np.asarray(networks.BicubicUpsampling2D(factor)(low[None]))[0]
    want = pillow_bicubic_float(low, factor)
    assert out.shape == want.shape == (37 * factor, 50 * factor, 3)
    b = 2 * factor  # Pillow renormalises its kernel at the border, MATLAB mirrors; both near
    np.testing.assert_allclose(out[b:-b, b:-b], want[b:-b, b:-b], atol=1e-3)
    assert np.abs(out - want).max() < 8


@needs_shared("sr", "Set5")
def test_untrained_residual_network_is_bicubic_on_set5():
    """An untrained --residual=bicubic network scores what bicubic scores (the paper's Set5
    protocol): training starts from the baseline, not from nothing."""
    net = networks.SuperResolutionNetwork(4, filters=8, num_residual_blocks=1, norm="none",
                                          residual="bicubic", loss="pixel")
    for name in ("img_002", "img_005"):
        high = images.read_image(os.path.join(SET5, "HR", f"{name}.png"))
        low = images.read_image(os.path.join(SET5, "LR_x4", f"{name}.png"))
        out = np.asarray(net(low[None].astype(np.float32)))[0]
        want = np.clip(pillow_bicubic_float(low, 4), 0, 255)
        np.testing.assert_allclose(out[8:-8, 8:-8], want[8:-8, 8:-8], atol=1e-3)
        baseline = degradation.bicubic_upscale(low, 4)
        mine = np.clip(np.round(out), 0, 255).astype(np.uint8)
        assert abs(metrics.psnr_y(mine, high, 4) - metrics.psnr_y(baseline, high, 4)) < 0.1


def test_residual_network_saves_loads_and_trains_its_head(tmp_path):
    net = networks.SuperResolutionNetwork(2, filters=8, num_residual_blocks=1, norm="none",
                                          residual="bicubic", loss="pixel")
    assert not np.any(net.get_layer("out_conv").get_weights()[0])  # zero-initialised head
    path = str(tmp_path / "r.keras")
    net.save(path)
    loaded = keras.saving.load_model(path)
    assert (loaded.residual, loaded.norm) == ("bicubic", "none")
    x = random_pixels((1, 9, 12, 3))
    np.testing.assert_array_equal(np.asarray(loaded(x)), np.asarray(net(x)))
    out = np.asarray(net(x))
    assert out.min() >= 0 and out.max() <= 255  # clipped to pixels


def test_residual_and_none_refused_values():
    with pytest.raises(ValueError, match="residual"):
        networks.SuperResolutionNetwork(4, filters=8, num_residual_blocks=1, residual="linear")


# -- schedule ---------------------------------------------------------------------------------
def test_warmup_cosine_schedule_values():
    s = schedules.WarmupDecay(1e-3, total_steps=1100, warmup_steps=100, decay="cosine")
    value = lambda step: float(s(step))  # noqa: E731
    assert value(0) == pytest.approx(1e-5)  # (step + 1) / warmup of the peak
    assert value(49) == pytest.approx(5e-4)
    assert value(100) == pytest.approx(1e-3)
    assert value(600) == pytest.approx(1e-3 * (0.01 + 0.99 * 0.5))  # half way down
    assert value(1100) == pytest.approx(1e-5)  # 1% at the end, and stays there
    assert value(5000) == pytest.approx(1e-5)
    steps = [value(i) for i in range(100, 1101, 50)]
    assert all(a >= b for a, b in zip(steps, steps[1:]))
    clone = schedules.WarmupDecay.from_config(s.get_config())
    assert float(clone(321)) == pytest.approx(value(321))


def test_step_schedule_divides_by_ten_twice():
    s = schedules.WarmupDecay(1.0, total_steps=900, warmup_steps=0, decay="step")
    assert [float(s(i)) for i in (0, 599, 600, 799, 800, 899)] == pytest.approx(
        [1.0, 1.0, 0.1, 0.1, 0.01, 0.01])


def test_constant_rate_without_warmup_is_a_plain_float():
    c = config_lib.SuperResolutionConfig(train_data="skimage", learning_rate=3e-4)
    assert schedules.learning_rate(c) == 3e-4


# -- losses -----------------------------------------------------------------------------------
def test_l1_pixel_loss():
    a = np.zeros((2, 4, 4, 3), np.float32)
    b = np.full((2, 4, 4, 3), 3.0, np.float32)
    b[1] = -2.0
    np.testing.assert_allclose(np.asarray(losses.pixel_loss(a, b, "l1")), [3.0, 2.0])
    np.testing.assert_allclose(np.asarray(losses.pixel_loss(a, b, "l2")), [9.0, 4.0])
    with pytest.raises(ValueError, match="pixel loss"):
        losses.pixel_loss(a, b, "huber")


def test_chroma_term_is_zero_for_grey_and_sees_colour_not_texture(photos):
    grey = np.repeat(photos["astronaut"][:64, :64, :1], 3, axis=-1).astype(np.float32)[None]
    chroma = np.asarray(losses.chroma(grey))
    assert np.abs(chroma).max() < 1e-3  # grey has no chroma
    tinted = grey.copy()
    tinted[..., 0] += 20.0  # a red cast
    assert float(losses.chroma_loss(tinted, grey, pool=4)[0]) > 50.0
    # Texture (a luma-only pattern finer than the pool) costs nothing.
    checker = (np.indices((64, 64)).sum(0) % 2 * 40.0)[None, :, :, None].astype(np.float32)
    assert float(losses.chroma_loss(grey + checker, grey, pool=4)[0]) < 1e-3
    assert float(losses.chroma_loss(grey + checker, grey, pool=1)[0]) < 1e-3


def test_chroma_objective_wraps_pixel_objective():
    c = config_lib.SuperResolutionConfig(train_data="skimage", loss="pixel", chroma_weight=0.5)
    objective = objectives.objective_from_config(c)
    assert objective.terms == ("total", "pixel", "chroma")
    y = random_pixels((2, 16, 16, 3), seed=3)
    targets = objective.content_targets(y)
    terms = {k: np.asarray(v) for k, v in objective(y + 10.0, targets).items()}
    np.testing.assert_allclose(terms["total"], terms["pixel"] + terms["chroma"], rtol=1e-6)
    np.testing.assert_allclose(terms["chroma"], 0.0, atol=1e-3)  # a grey shift has no chroma


# -- training: EMA, schedule, init_from -------------------------------------------------------
def sr_config(tmp_path, **overrides):
    values = dict(train_data="skimage", image_size=32, scale=2, batch_size=2, steps=3,
                  loss="pixel", norm="none", residual="bicubic", pixel_loss="l1",
                  learning_rate=1e-2, lr_schedule="cosine", warmup_steps=1, ema=0.5,
                  checkpoint_every=1, log_every=1, sample_every=100, precision="float32",
                  model_dir=str(tmp_path / "run"), export_dir=str(tmp_path / "export"),
                  name="sr_opts")
    values.update(overrides)
    return config_lib.SuperResolutionConfig(**values)


@pytest.fixture(scope="module")
def sr_run(tmp_path_factory):
    """One ``sr_config()`` run (3 steps, moving average, exported), trained once for the tests
    that only read what it wrote (its .keras file, checkpoints and SavedModel)."""
    config = sr_config(tmp_path_factory.mktemp("sr_run"))
    return config, trainer.train(config, verbose=0)


@pytest.mark.slow
def test_moving_average_is_what_is_saved_and_exported(sr_run):
    config, result = sr_run
    saved = keras.saving.load_model(result["keras_path"])
    # The checkpoint holds the raw weights of the last step and their average.
    last = checkpoints.list_checkpoints(os.path.join(config.model_dir, "checkpoints"))[-1][1]
    with np.load(last) as f:
        raw = [f[f"net_{i}"] for i in range(len(saved.weights))]
    averaged = trainer.network_from_checkpoint(config, last).get_weights()
    head = [i for i, v in enumerate(saved.weights) if v.path.endswith("out_conv/kernel")][0]
    assert not np.allclose(raw[head], averaged[head])  # the average lags the raw weights
    for got, want in zip(saved.get_weights(), averaged):
        np.testing.assert_allclose(got, want, rtol=1e-6, atol=1e-7)
    # The SavedModel's network asset is the same averaged network.
    from kperceptual.inference import loading as models

    exported = models.load_model(result["export_path"]).network
    for got, want in zip(exported.get_weights(), averaged):
        np.testing.assert_allclose(got, want, rtol=1e-6, atol=1e-7)
    assert json.load(open(os.path.join(config.model_dir, "config.json")))["residual"] == \
        "bicubic"


@pytest.mark.slow
def test_resume_with_a_schedule_continues_it(tmp_path, no_export):
    trainer.train(sr_config(tmp_path, steps=2, lr_schedule="step", warmup_steps=0), verbose=0)
    result = trainer.train(sr_config(tmp_path, steps=4, lr_schedule="step", warmup_steps=0),
                           verbose=0)
    assert (result["steps"], result["trained_steps"]) == (4, 2)


@pytest.mark.slow
def test_init_from_copies_weights_and_refuses_another_shape(tmp_path, sr_run):
    _, first = sr_run
    start = sr_config(tmp_path).make_network()
    trainer.init_network_from(start, first["keras_path"])
    for got, want in zip(start.get_weights(), first["network"].get_weights()):
        np.testing.assert_array_equal(got, want)
    other = sr_config(tmp_path, scale=4).make_network()
    with pytest.raises(config_lib.ConfigError, match="--init_from: .*do not fit"):
        trainer.init_network_from(other, first["keras_path"])
    with pytest.raises(config_lib.ConfigError, match="--init_from: .*no_such"):
        trainer.init_network_from(other, str(tmp_path / "no_such.keras"))


@pytest.mark.parametrize("field, value, message", [
    ("residual", "linear", "--residual: unknown value"),
    ("pixel_loss", "l3", "--pixel_loss: unknown value"),
    ("chroma_weight", -1.0, "--chroma_weight: must be"),
    ("lr_schedule", "linear", "--lr_schedule: unknown value"),
    ("warmup_steps", 3, "--warmup_steps: must be"),
    ("ema", 1.0, "--ema: must be in"),
    ("loss_shift", -1, "--loss_shift: must be between 0 and half"),
    ("grid_weight", -0.5, "--grid_weight: must be a finite number"),
    ("loss_shift", 64, "--loss_shift: must be between 0 and half"),
])
def test_bad_option_values_name_their_flag(tmp_path, field, value, message):
    with pytest.raises(config_lib.ConfigError, match=message):
        config_lib.validate(sr_config(tmp_path, **{field: value}))


# -- the blob check ---------------------------------------------------------------------------
def test_pinned_region_check_on_synthetic_images():
    rng = np.random.default_rng(0)
    truth = rng.uniform(60, 200, (100, 100, 3))
    out = truth.copy()
    assert metrics.largest_pinned_region(out, truth) == 0.0
    out[10:20, 10:30] = 0.0  # a black blob of 200 pixels: 2% of the image
    out[50, 50] = 255.0  # one stray pixel
    assert metrics.largest_pinned_region(out, truth) == pytest.approx(0.02)
    # Where the truth is itself black, black output is no blob.
    truth[10:20, 10:30] = 5.0
    assert metrics.largest_pinned_region(out, truth) == pytest.approx(1e-4)
    # One channel pinned counts too (the green-rimmed blobs); 8-connected diagonals join.
    out2 = truth.copy()
    for i in range(30):
        out2[60 + i, 60 + i, 1] = 255.0
    assert metrics.largest_pinned_region(out2, truth) == pytest.approx(30 / 1e4)


def test_grid_pattern_sees_a_lattice_on_the_low_res_grid_not_blur_or_noise(photos):
    truth = np.asarray(photos["coffee"], np.float64)[100:228, 200:328]
    assert metrics.grid_pattern(truth, truth, 4) == 0.0
    rng = np.random.default_rng(0)
    noisy = truth + rng.normal(0, 8, truth.shape)
    blurred = np.asarray(Image.fromarray(truth.astype(np.uint8)).resize((32, 32), Image.BICUBIC)
                         .resize((128, 128), Image.BICUBIC), np.float64)
    # A diamond lattice of period 4, the same in every low-res pixel: amplitude 3 levels in
    # R, G and B, so 3 x 219/255 in luma, half of the 16 phases at +-1 and half at 0.
    rows, cols = np.mgrid[:128, :128]
    lattice = truth + 3.0 * np.cos(np.pi * (rows % 4 + cols % 4) / 2)[..., None]
    assert metrics.grid_pattern(noisy, truth, 4) < 0.6  # about 8 x 4 / 64 = 0.5
    assert metrics.grid_pattern(blurred, truth, 4) < 1.0
    assert metrics.grid_pattern(lattice, truth, 4) == pytest.approx(3.0 * 219 / 255 * 0.5 ** 0.5, rel=0.02)
    with pytest.raises(ValueError, match="smaller than one 64-pixel window"):
        metrics.grid_pattern(truth[:40], truth[:40], 4)


def test_grid_loss_is_the_grid_pattern_squared_and_trains_it_away():
    rng = np.random.default_rng(1)
    truth = rng.uniform(0, 255, (2, 96, 96, 3)).astype("float32")
    rows, cols = np.mgrid[:96, :96]
    lattice = truth + 2.0 * np.cos(np.pi * (rows % 4 + cols % 4) / 2)[None, ..., None]
    window = losses.grid_window(96, 4)
    assert window == 48 and losses.grid_window(128, 8) == 64
    np.testing.assert_allclose(np.asarray(losses.grid_loss(truth, truth, 4, window)), 0.0)
    # The same phase pattern in R, G and B: the loss is its squared rms, the metric its luma's.
    loss = np.asarray(losses.grid_loss(lattice, truth, 4, window))
    np.testing.assert_allclose(loss, 2.0 ** 2 * 0.5, rtol=1e-5)
    assert metrics.grid_pattern(lattice[0], truth[0], 4, window) == pytest.approx(
        loss[0] ** 0.5 * 219 / 255, rel=1e-4)
    # Noise that does not care about the grid costs little: (its spread / samples per phase)^2.
    noisy = truth + rng.normal(0, 10, truth.shape).astype("float32")
    assert np.asarray(losses.grid_loss(noisy, truth, 4, window)).max() < 1.5
    # Built from a config, it is one more logged term.
    config = config_lib.SuperResolutionConfig(loss="pixel", grid_weight=2.0, image_size=96)
    built = objectives.objective_from_config(config)
    assert "grid" in built.terms
    terms = built(keras.ops.convert_to_tensor(lattice), built.content_targets(truth))
    np.testing.assert_allclose(np.asarray(terms["grid"]), 2.0 * loss, rtol=1e-5)


def test_loss_shift_scores_both_images_at_one_offset_that_moves():
    seen = []

    class Recorder:
        terms = ("total",)

        def content_targets(self, images):
            return images

        def __call__(self, images, targets, styles=None):
            seen.append((np.asarray(images), np.asarray(targets), styles))
            return {"total": keras.ops.mean(images, axis=(1, 2, 3))}

    shifted = objectives.WithLossShift(Recorder(), 8)
    rng = np.random.default_rng(0)
    offsets = set()
    for _ in range(20):
        target = rng.uniform(0, 255, (2, 24, 24, 3)).astype("float32")
        output = target + 1.0
        shifted(output, shifted.content_targets(target), styles="kept")
        out, tgt, styles = seen[-1]
        assert out.shape == (2, 16, 16, 3) and styles == "kept"
        np.testing.assert_array_equal(out, tgt + 1.0)  # the same window of both
        dy, dx = (int(v) for v in shifted.offsets(keras.ops.convert_to_tensor(target)))
        np.testing.assert_array_equal(tgt, target[:, dy:dy + 16, dx:dx + 16])
        offsets.add((dy, dx))
    assert len(offsets) >= 10  # it moves from batch to batch
    # Built from a config: the feature objective is wrapped, the colour term sees it all.
    config = config_lib.SuperResolutionConfig(loss="feat", loss_shift=8, chroma_weight=1.0)

    class LayerNames:
        layer_names = ("relu2_2",)

        def partial(self, layers):
            return self

    built = objectives.objective_from_config(config, loss_net=LayerNames())
    assert isinstance(built.objective, objectives.WithLossShift) and built.objective.shift == 8


def test_loss_shift_applies_to_the_feature_loss_only(tmp_path):
    with pytest.raises(config_lib.ConfigError, match="--loss_shift: applies to --loss=feat"):
        config_lib.validate(sr_config(tmp_path, loss="pixel", loss_shift=4))


def test_mean_chroma_offset_of_grey_and_colour():
    grey = np.full((4, 4, 3), 77.0)
    assert metrics.mean_chroma_offset(grey) == pytest.approx((0.0, 0.0), abs=1e-9)
    red = np.zeros((4, 4, 3))
    red[..., 0] = 255
    cb, cr = metrics.mean_chroma_offset(red)
    assert cr == pytest.approx(127.5) and cb == pytest.approx(43.03, abs=0.01)


def test_residual_head_clips_forward_and_passes_gradient_through():
    """Outputs stay in [0, 255], but an output pinned beyond the range still gets the loss's
    gradient (the scaled tanh gives exactly 0 there, so pinned regions never recover)."""
    import tensorflow as tf

    layer = networks.ClipPixels()
    x = tf.constant([[-40.0, 10.0, 300.0]])
    with tf.GradientTape() as tape:
        tape.watch(x)
        y = layer(x)
        loss = tf.reduce_sum(tf.abs(y - tf.constant([[20.0, 20.0, 200.0]])))
    np.testing.assert_allclose(y.numpy(), [[0.0, 10.0, 255.0]])
    np.testing.assert_allclose(tape.gradient(loss, x).numpy(), [[-1.0, -1.0, 1.0]])
    tanh = tf.constant([[12.0]])
    with tf.GradientTape() as tape:
        tape.watch(tanh)
        out = tf.tanh(tanh)
    assert tape.gradient(out, tanh).numpy()[0, 0] == 0.0  # the scaled tanh's dead zone


def test_init_from_a_missing_model_is_refused_before_work(tmp_path):
    with pytest.raises(config_lib.ConfigError, match="--init_from: .*nothing_here: no such model"):
        config_lib.validate(sr_config(tmp_path, init_from=str(tmp_path / "nothing_here")))
