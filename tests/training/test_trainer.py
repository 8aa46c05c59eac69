"""The trainer: learning, MirroredStrategy over 2 CPU replicas, resume, NaN guard, export."""

import os

import keras
import numpy as np
import pytest
import tensorflow as tf

from helpers import copy_run, small_config, with_border_margin
from kperceptual import config as config_lib
from kperceptual.imaging import images
from kperceptual.training import checkpoints
from kperceptual.training import trainer


def _batch(photos, size, n):
    names = ["astronaut", "chelsea", "coffee", "astronaut"][:n]
    return np.stack([images.resize_and_center_crop(photos[k], size) for k in names])


def _objective_value(t, batch):
    x = tf.constant(batch, tf.float32)
    terms = t.objective(t.network(x, training=False), t.objective.content_targets(x))
    return float(tf.reduce_mean(terms["total"]))


@pytest.mark.slow
def test_a_few_steps_on_two_replicas_lower_the_objective(tmp_path, photos, vgg_weights_path):
    # Seeded: with an unseeded start and a learning rate of 1e-2 this failed now and then (one
    # start in five rose); 3e-3 lowered the objective to at most 0.24 of its start in 5 of 5.
    keras.utils.set_random_seed(0)
    config = small_config(tmp_path, learning_rate=3e-3)
    t = trainer.build_trainer(config, tf.distribute.MirroredStrategy(["/cpu:0", "/cpu:1"]))
    assert t.distribute_strategy.num_replicas_in_sync == 2
    batch = _batch(photos, 32, 2)
    before = _objective_value(t, batch)
    history = t.fit(tf.data.Dataset.from_tensors(batch).repeat(), steps_per_epoch=12, shuffle=False,
                    epochs=1, verbose=0)
    after = _objective_value(t, batch)
    assert set(history.history) == {"loss", "content_loss", "style_loss", "tv_loss"}
    assert after < 0.7 * before, (before, after)


@pytest.mark.slow
def test_two_replicas_give_the_single_replica_gradients(tmp_path, photos, vgg_weights_path):
    config = small_config(tmp_path)
    batch = _batch(photos, 32, 4)
    sgd = lambda: keras.optimizers.SGD(learning_rate=1e-3)  # noqa: E731 (linear in the gradient)
    one = trainer.build_trainer(config, tf.distribute.MirroredStrategy(["/cpu:0"]), optimizer=sgd)
    two = trainer.build_trainer(config, tf.distribute.MirroredStrategy(["/cpu:0", "/cpu:1"]),
                                optimizer=sgd)
    assert two.distribute_strategy.num_replicas_in_sync == 2
    start = one.network.get_weights()
    two.network.set_weights(start)
    logs = []
    for t in (one, two):
        h = t.fit(tf.data.Dataset.from_tensors(batch).repeat(), steps_per_epoch=1, epochs=1, shuffle=False,
                  verbose=0)
        logs.append(h.history["loss"][0])
    deltas_one = [a - s for a, s in zip(one.network.get_weights(), start)]
    deltas_two = [b - s for b, s in zip(two.network.get_weights(), start)]
    scale = max(np.abs(d).max() for d in deltas_one)
    assert scale > 0
    for d1, d2 in zip(deltas_one, deltas_two):
        np.testing.assert_allclose(d2, d1, atol=2e-3 * scale)
    np.testing.assert_allclose(logs[1], logs[0], rtol=1e-4)


@pytest.mark.slow
def test_train_resumes_and_exports_new_versions(tmp_path, two_step_run):
    # The first run is the shared two_step_run (small_config(steps=2), trained from nothing;
    # the fixture asserts it trained 2 steps of 2), copied here: the resume is this test's own.
    first = copy_run(two_step_run, tmp_path)
    ckpts = checkpoints.list_checkpoints(str(tmp_path / "run" / "checkpoints"))
    assert [s for s, _ in ckpts] == [1, 2]
    logs = set(os.listdir(tmp_path / "run" / "logs"))
    assert logs  # TensorBoard events of the first run
    second = trainer.train(small_config(tmp_path, steps=4), verbose=0)
    assert (second["steps"], second["trained_steps"]) == (4, 2)
    assert first["export_path"].endswith(os.path.join("test_style", "1"))
    assert os.path.isdir(first["export_path"])
    assert second["export_path"].endswith(os.path.join("test_style", "2"))
    assert os.path.isfile(second["keras_path"])
    assert set(os.listdir(tmp_path / "run" / "logs")) - logs  # the resumed run's own events


@pytest.mark.slow
def test_resume_with_another_architecture_is_refused(tmp_path, two_step_run):
    copy_run(two_step_run, tmp_path)
    with pytest.raises(config_lib.ConfigError, match="--norm"):
        trainer.train(small_config(tmp_path, steps=3, norm="batch"), verbose=0)


@pytest.mark.slow
def test_nan_loss_stops_and_keeps_the_last_good_checkpoint(tmp_path, two_step_run,
                                                          monkeypatch):
    from kperceptual.losses import objective as losses  # the objective calls the loss terms

    copy_run(two_step_run, tmp_path)  # a run of 2 steps, exported as version 1
    monkeypatch.setattr(losses, "total_variation_loss",  # a loss term that goes NaN
                        lambda x: keras.ops.sum(x, axis=(1, 2, 3)) * float("nan"))
    with pytest.raises(trainer.TrainingDiverged, match=r"step 3.*ckpt-00000002"):
        trainer.train(small_config(tmp_path, steps=5), verbose=0)
    assert [s for s, _ in checkpoints.list_checkpoints(str(tmp_path / "run" / "checkpoints"))] == [1, 2]
    assert sorted(os.listdir(tmp_path / "export" / "test_style")) == ["1"]  # nothing exported


@pytest.mark.slow
def test_saved_model_signatures_map_any_size_to_uint8(tmp_path, photos, vgg_weights_path):
    result = trainer.train(small_config(tmp_path, steps=1, precision="mixed_bfloat16"),
                           verbose=0)
    keras_model = keras.saving.load_model(result["keras_path"])
    assert keras_model.dtype_policy.name == "float32"
    served = tf.saved_model.load(result["export_path"])
    assert set(served.signatures) == {"serving_default", "serving_float", "serving_bytes"}
    image = images.resize_long_side(photos["chelsea"], 45)[None]  # 30 x 45, odd width
    out = served.signatures["serving_default"](images=tf.constant(image))["outputs"].numpy()
    assert out.dtype == np.uint8 and out.shape == image.shape
    expected = with_border_margin(keras_model, image[0])[None]  # the SavedModel applies it
    assert np.abs(out.astype(np.float32) - expected).max() <= 1.0
    out_f = served.signatures["serving_float"](images=tf.constant(image, tf.float32))["outputs"]
    np.testing.assert_array_equal(out_f.numpy(), out)
