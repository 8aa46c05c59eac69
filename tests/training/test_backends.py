"""Training on the JAX and PyTorch backends, weights across backends, JAX DataParallel, mixed
precision. Each backend runs in its own process (tests/backend_worker.py): Keras fixes its
backend when it is first imported, and this process runs TensorFlow. JAX and PyTorch commands
share one served worker process per backend (see run_worker)."""

import json
import os
import subprocess
import sys

import keras
import numpy as np
import pytest
import tensorflow as tf

from helpers import (BLOCK_TENSORFLOW, REPO, SGD_LEARNING_RATE, SUM_ORDER_TOLERANCE, TIMEOUT,
                     config_json, psnr, random_pixels, run_worker, small_config,
                     stop_served_workers, with_border_margin)
from kperceptual import config as config_lib
from kperceptual.imaging import images
from kperceptual.training import checkpoints
from kperceptual.training import trainer

@pytest.fixture
def batch_file(tmp_path, photos):
    batch = np.stack([images.resize_and_center_crop(photos[n], 32)
                      for n in ("astronaut", "chelsea")])
    np.save(tmp_path / "batch.npy", batch)
    return tmp_path / "batch.npy"


@pytest.mark.slow
@pytest.mark.parametrize("backend", ["jax", "torch"])
def test_a_few_steps_lower_the_loss(backend, tmp_path, batch_file, vgg_weights_path):
    # The same compute_loss as on TensorFlow, run by Keras's own train_step on this backend.
    result = run_worker(backend, "steps", config_json(tmp_path, learning_rate=3e-3),
                        batch_file, 12)
    assert set(result["history"]) == {"loss", "content_loss", "style_loss", "tv_loss"}
    assert all(np.isfinite(result["history"]["loss"]))
    assert result["after"] < 0.7 * result["before"], result


@pytest.mark.slow
@pytest.mark.parametrize("backend", ["jax", "torch"])
def test_train_writes_checkpoints_keras_file_and_saved_model(backend, tmp_path,
                                                             vgg_weights_path):
    # The whole job on another backend, reading images with keras.utils.PyDataset; the
    # SavedModel is written from its .keras file by a TensorFlow-backend process.
    result = run_worker(backend, "train", config_json(tmp_path, steps=2, loader="py_dataset"),
                        tmp_path / "weights.npz")
    assert (result["steps"], result["loader"]) == (2, "py_dataset")
    assert [s for s, _ in checkpoints.list_checkpoints(str(tmp_path / "run" / "checkpoints"))] \
        == [1, 2]
    network = keras.saving.load_model(result["keras_path"])  # here: TensorFlow
    with np.load(tmp_path / "weights.npz") as f:
        for mine, theirs in zip(network.get_weights(), (f[k] for k in f.files)):
            np.testing.assert_array_equal(mine, theirs)
    served = tf.saved_model.load(result["export_path"])
    image = random_pixels((1, 24, 40, 3)).round().astype(np.uint8)
    out = served.signatures["serving_default"](images=tf.constant(image))["outputs"].numpy()
    expected = with_border_margin(network, image[0])[None]  # the SavedModel applies it
    assert np.abs(out.astype(np.float32) - expected).max() <= 1.0


@pytest.mark.slow
def test_weights_round_trip_between_backends(tmp_path):
    # Each backend saves a style and a super-resolution network; each other backend loads them
    # and must compute the same output (within float rounding: PSNR >= 60 dB). TensorFlow's
    # part runs here (this process's backend); JAX and PyTorch each need a process, and
    # PyTorch saves and loads in one, as the others' files are there by then.
    import backend_worker  # tests/: the same save and load as the workers

    assert backend_worker.BACKEND == "tensorflow"
    np.save(tmp_path / "input.npy", random_pixels((1, 24, 40, 3)))
    backends = ("tensorflow", "jax", "torch")
    backend_worker.save(str(tmp_path), str(tmp_path / "input.npy"))
    run_worker("jax", "save", tmp_path, tmp_path / "input.npy")
    loaded = {"torch": run_worker("torch", "save_and_load", tmp_path,
                                  tmp_path / "input.npy")["loaded"],
              "jax": run_worker("jax", "load", tmp_path, tmp_path / "input.npy")["loaded"],
              "tensorflow": backend_worker.load(str(tmp_path), str(tmp_path / "input.npy"))[
                  "loaded"]}
    for backend in backends:
        assert sorted(loaded[backend]) == sorted(f"{other}_{kind}.keras" for other in backends
                                                 if other != backend for kind in ("style", "sr"))
        assert sorted(loaded[backend].values()) == ["StyleTransferNetwork"] * 2 + \
            ["SuperResolutionNetwork"] * 2  # our classes, no custom_objects needed
    for origin in backends:
        for kind in ("style", "sr"):
            reference = np.load(tmp_path / f"{origin}_{kind}_by_{origin}.npy")
            assert reference.shape == ((1, 24, 40, 3) if kind == "style" else (1, 48, 80, 3))
            for other in backends:
                if other != origin:
                    out = np.load(tmp_path / f"{origin}_{kind}_by_{other}.npy")
                    assert psnr(out, reference) >= 60, (origin, other, kind)


@pytest.mark.slow
def test_jax_data_parallel_over_two_devices_equals_one_device(tmp_path, vgg_weights_path):
    # keras.distribution.DataParallel over two (virtual CPU) devices: the same steps as one
    # device on the same global batch (plain SGD, as in test_multi_worker.py). Only the weights
    # are compared, so the runs write no SavedModel (from JAX, a TensorFlow process each) and
    # no samples; the one-device run also saves the weights both start from. Both run in one
    # process with two devices: the one-device run is given the Distribution that "auto" is
    # in a process with one (--one_device: no keras.distribution, the default device).
    weights, two_devices = [], {"XLA_FLAGS": "--xla_force_host_platform_device_count=2"}
    for devices, strategy in ((2, "data_parallel"), (1, "auto")):
        folder = tmp_path / strategy
        one = [f"--start={tmp_path / 'start.npz'}", "--one_device"] if devices == 1 else []
        result = run_worker(
            "jax", "train", config_json(folder, steps=2, strategy=strategy, batch_size=2,
                                        learning_rate=SGD_LEARNING_RATE, sample_every=100),
            folder / "weights.npz", "sgd", "--no_export", *one, env=two_devices)
        assert result["distribution"].endswith(f"{devices} replica" + "s" * (devices > 1))
        assert result["trained_steps"] == 2 and result["export_path"] is None
        with np.load(folder / "weights.npz") as f:
            weights.append([f[k] for k in f.files])
    stop_served_workers("jax", two_devices)  # no other test uses this one
    with np.load(tmp_path / "start.npz") as f:
        start = [f[k] for k in f.files]
    moved = max(np.abs(w - s).max() for w, s in zip(weights[1], start))
    assert moved > 1e-4
    for two, one in zip(*weights):
        np.testing.assert_allclose(two, one, rtol=0, atol=SUM_ORDER_TOLERANCE * moved)


@pytest.mark.slow
def test_mixed_bfloat16_steps_stay_finite(tmp_path, photos, vgg_weights_path):
    config = small_config(tmp_path, precision="mixed_bfloat16", learning_rate=1e-3)
    keras.utils.set_random_seed(0)  # the same starting network on every run
    with trainer.dtype_policy("mixed_bfloat16"):
        t = trainer.build_trainer(config, tf.distribute.MirroredStrategy(["/cpu:0"]))
    assert t.network.compute_dtype == "bfloat16"
    assert {v.dtype for v in t.network.weights} == {"float32"}  # master weights
    batch = np.stack([images.resize_and_center_crop(photos[n], 32)
                      for n in ("astronaut", "chelsea")])
    history = t.fit(tf.data.Dataset.from_tensors(batch).repeat(), steps_per_epoch=1, epochs=6,
                    shuffle=False, verbose=0).history
    assert all(np.isfinite(history[name]).all() for name in history), history
    # At 3e-3 the loss jumped about (a clean clone's unseeded run: 4109, 6610, 15338, 1216,
    # 3546, 5491), so the rate is 1e-3 and the network seeded; it must fall, at any step.
    assert min(history["loss"][1:]) < 0.9 * history["loss"][0], history["loss"]


# Every loss weight times 2**-10 (exact in floating point): the loss and its gradients are
# 2**-10 of the defaults', which Adam's steps do not see, so a run is the run at the default
# weights (its losses times 2**-10) with ten fewer of the loss-scale halvings that overflowing
# float16 gradients force (each a whole skipped step on CPU).
QUIETER = 2.0 ** -10


def quieter_weights():
    defaults = config_lib.ObjectiveConfig()
    return {name: getattr(defaults, name) * QUIETER
            for name in ("content_weight", "style_weight", "tv_weight")}


@pytest.mark.slow
def test_mixed_float16_on_two_tensorflow_replicas(tmp_path, batch_file, vgg_weights_path):
    # Loss scale 2**15 at first: steps whose gradients overflow are skipped while it halves,
    # and an overflow on either replica must skip the step on both. At the default weights
    # the first 13 of 16 steps were skipped (and the 15th); at QUIETER ones 3 of 6 (and the
    # 5th): the same run, losses 2**-10 of those.
    result = run_worker("tensorflow", "two_replicas",
                        config_json(tmp_path, precision="mixed_float16", learning_rate=1e-3,
                                    **quieter_weights()),
                        batch_file, 6)
    assert (result["replicas"], result["optimizer"]) == (2, "LossScaleOptimizer")
    assert result["variable_dtypes"] == ["float32"]
    losses = result["history"]["loss"]
    assert all(np.isfinite(losses)) and np.isfinite(result["after"])
    assert losses[1] == losses[0], losses  # the first step overflowed: skipped, on both
    assert result["after"] < 0.9 * result["before"], result


@pytest.mark.slow
def test_mixed_float16_on_jax_stays_finite_and_learns(tmp_path, batch_file, vgg_weights_path):
    result = run_worker("jax", "steps", config_json(tmp_path, precision="mixed_float16",
                                                    learning_rate=1e-3), batch_file, 16)
    assert result["optimizer"] == "LossScaleOptimizer"
    assert result["variable_dtypes"] == ["float32"]
    assert all(np.isfinite(result["history"]["loss"])) and np.isfinite(result["after"])
    assert result["after"] < result["before"], result


@pytest.mark.slow
def test_mixed_float16_runs_count_skipped_steps(tmp_path, vgg_weights_path, no_export):
    # Loss scaling skips the optimizer's update on overflow (the first steps, here); the run
    # still trains --steps batches and checkpoints the last one.
    result = trainer.train(small_config(tmp_path, steps=3, precision="mixed_float16"),
                           verbose=0)
    assert (result["steps"], result["trained_steps"]) == (3, 3)
    assert [s for s, _ in checkpoints.list_checkpoints(str(tmp_path / "run" / "checkpoints"))] \
        == [2, 3]
    with pytest.raises(config_lib.ConfigError, match="--model_dir: .*another --precision"):
        trainer.train(small_config(tmp_path, steps=4, precision="float32"), verbose=0)


def test_strategies_a_backend_lacks_are_refused_in_one_line(tmp_path, monkeypatch):
    from kperceptual.training import distribute

    with pytest.raises(config_lib.ConfigError, match="--strategy: data_parallel is not "
                                                     "available on the tensorflow backend"):
        distribute.make_distribution("data_parallel")
    monkeypatch.delenv("TF_CONFIG", raising=False)
    with pytest.raises(config_lib.ConfigError, match="--strategy: multi_worker needs TF_CONFIG"):
        distribute.make_distribution("multi_worker")
    monkeypatch.setenv("TF_CONFIG", '{"cluster": {"worker": ["127.0.0.1:1"]}, '
                                    '"task": {"type": "worker", "index": 3}}')
    with pytest.raises(config_lib.ConfigError, match="TF_CONFIG is not a valid"):
        distribute.make_distribution("multi_worker")



@pytest.mark.slow
def test_train_command_without_tensorflow(tmp_path, vgg_weights_path):
    # A JAX-only machine (like the GPU machines this project borrows): TensorFlow cannot be
    # imported, so images come through keras.utils.PyDataset and logs are JSON lines and PNGs.
    script = BLOCK_TENSORFLOW + (
        "import runpy\nsys.argv = ['kperceptual.train'] + sys.argv[1:]\n"
        "runpy.run_module('kperceptual.train', run_name='__main__')\n")
    args = ["--style_image=skimage:hubble_deep_field", "--train_data=skimage",
            "--image_size=32", "--style_size=64", "--batch_size=2", "--precision=float32",
            "--steps=2", "--checkpoint_every=1", "--log_every=1", "--sample_every=2",
            "--name=no_tf", f"--model_dir={tmp_path / 'run'}",
            f"--export_dir={tmp_path / 'export'}"]
    done = subprocess.run([sys.executable, "-c", script, *args], capture_output=True, text=True,
                          timeout=TIMEOUT, cwd=tmp_path,
                          env={**os.environ, "KERAS_BACKEND": "jax", "PYTHONPATH": REPO})
    assert done.returncode == 0, done.stderr[-3000:]
    assert "loader py_dataset" in done.stdout
    assert "SavedModel:  not written (no TensorFlow)" in done.stdout
    assert "python -m kperceptual.export --model=" in done.stderr  # how to export later
    assert not (tmp_path / "export").exists()
    logs = sorted(os.listdir(tmp_path / "run" / "logs"))
    assert logs == ["sample_0_00000002.png", "sample_1_00000002.png", "sample_2_00000002.png",
                    "scalars.jsonl"]
    with open(tmp_path / "run" / "logs" / "scalars.jsonl") as f:
        rows = [json.loads(line) for line in f]
    assert [r["step"] for r in rows] == [1, 2] and all(np.isfinite(r["loss"]) for r in rows)
    assert keras.saving.load_model(tmp_path / "run" / "no_tf.keras").name == "no_tf"
