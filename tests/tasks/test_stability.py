"""The training-time temporal stability term (``--stability_weight``): a network that moves with
the scene scores 0, one that depends on the whole frame does not, and training with the term
lowers it on every backend's objective path (one style and several)."""

import keras
import numpy as np
import pytest
import tensorflow as tf

from helpers import config_json, run_worker, small_config
from kperceptual import config as config_lib
from kperceptual.imaging import images
from kperceptual.losses import perceptual as losses
from kperceptual.training import trainer


def _views(pixels, shift, offset=None):
    """The window at ``offset`` (default (shift, shift)), each side ``shift`` pixels shorter."""
    dy, dx = offset or (shift, shift)
    return pixels[:, dy:dy + pixels.shape[1] - shift, dx:dx + pixels.shape[2] - shift]


def test_an_output_that_moves_with_the_scene_scores_zero():
    x = np.random.default_rng(0).uniform(0, 255, (2, 64, 64, 3)).astype(np.float32)
    for offset in ((1, 1), (0, 3), (4, 8), (8, 0)):
        view = _views(x, 8, offset)
        value = keras.ops.convert_to_numpy(losses.stability_loss(view, x, offset))
        assert value.shape == (2,) and np.all(value == 0)
        # The same pixels, misplaced by one: not stable.
        wrong = keras.ops.convert_to_numpy(losses.stability_loss(
            view, x, (offset[0] + 1, offset[1])))
        assert np.all(wrong > 100)


def test_whole_frame_statistics_are_unstable(photos):
    # f = the frame minus its mean (instance normalisation's effect): the shifted view has
    # another mean, so every pixel moves by the difference of the means.
    x = images.resize_and_center_crop(photos["astronaut"], 96)[None].astype(np.float32)
    f = lambda v: v - v.mean(axis=(1, 2), keepdims=True)  # noqa: E731
    shift = 8
    value = float(losses.stability_loss(f(_views(x, shift)), f(x), (shift, shift))[0])
    difference = x[:, shift:, shift:].mean(axis=(1, 2)) - x.mean(axis=(1, 2))
    assert value == pytest.approx(float(np.mean(difference ** 2)), rel=1e-4)


@pytest.mark.slow
@pytest.mark.parametrize("styles", [1, 2])
def test_training_with_the_term_lowers_it(tmp_path, photos, vgg_weights_path, styles):
    style_image = ",".join(["skimage:hubble_deep_field", "skimage:coffee"][:styles])
    batch = np.stack([images.resize_and_center_crop(photos[k], 64)
                      for k in ("astronaut", "chelsea", "coffee", "astronaut")])
    common = dict(image_size=64, batch_size=4, learning_rate=1e-3, style_image=style_image,
                  stability_shift=8, stability_noise=2.0)
    keras.utils.set_random_seed(0)
    t = trainer.build_trainer(small_config(tmp_path, stability_weight=1.0, **common),
                              tf.distribute.MirroredStrategy(["/cpu:0"]))
    assert t.stability_weight == 1.0
    if styles > 1:
        inputs = {"pixels": batch, "style": np.array([0, 1, 0, 1], np.int32)}
        data = tf.data.Dataset.from_tensors(inputs).repeat()
    else:
        inputs, data = batch, tf.data.Dataset.from_tensors(batch).repeat()

    def stability():
        out = keras.ops.convert_to_numpy(t(inputs))
        view = keras.ops.convert_to_numpy(t(
            {**inputs, "pixels": _views(batch, 8, (3, 5))} if styles > 1
            else _views(batch, 8, (3, 5))))
        return float(np.mean(keras.ops.convert_to_numpy(
            losses.stability_loss(view, out, (3, 5)))))

    before = stability()
    history = t.fit(data, steps_per_epoch=15, epochs=1, shuffle=False, verbose=0).history
    assert "stability_loss" in history and np.isfinite(history["loss"]).all()
    assert stability() < 0.5 * before, (before, stability())


def test_the_term_is_checked_and_recorded_with_the_objective(tmp_path):
    config = small_config(tmp_path, image_size=64, stability_weight=0.5)
    config_lib.validate(config)
    assert config.to_dict()["stability_weight"] == 0.5
    assert "stability_weight" in config_lib.OBJECTIVE_FIELDS  # a resume may not change it
    with pytest.raises(config_lib.ConfigError, match="stability_shift: must be 1 to 24 pixels"):
        config_lib.validate(small_config(tmp_path, image_size=64, stability_weight=0.5,
                                         stability_shift=30))
    # Off (the paper's objective), the shift is not checked and the trainer has no such term.
    config_lib.validate(small_config(tmp_path, image_size=32, stability_shift=30))


@pytest.mark.slow
def test_the_term_trains_on_jax(tmp_path, photos, vgg_weights_path):
    # Keras's own train_step runs the same compute_loss there (random offsets and noise from
    # the trainer's seed generator inside the jitted step).
    batch = np.stack([images.resize_and_center_crop(photos[k], 64)
                      for k in ("astronaut", "chelsea")])
    np.save(tmp_path / "batch.npy", batch)
    result = run_worker("jax", "steps", config_json(tmp_path, image_size=64, stability_weight=1.0,
                                                    learning_rate=1e-3), tmp_path / "batch.npy", 4)
    assert "stability_loss" in result["history"]
    assert np.isfinite(result["history"]["loss"]).all() and result["after"] < result["before"]
