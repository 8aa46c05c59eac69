"""Hostile inputs and faults (issue 15): poisoned and damaged checkpoints, unreadable training
folders, files that are not files, half-written results, colliding runs."""

import os
import zipfile

import keras
import numpy as np
import pytest

from helpers import copy_run, small_config
from kperceptual import config as config_lib
from kperceptual.training import checkpoints
from kperceptual.training import trainer


def _checkpoints(tmp_path):
    return checkpoints.list_checkpoints(str(tmp_path / "run" / "checkpoints"))


def _all_finite(path):
    with np.load(path) as f:
        return all(np.isfinite(f[k]).all() for k in f.files)


# -- 2: the NaN guard never keeps (or names) a poisoned checkpoint ---------------------------
@pytest.mark.slow
def test_divergent_weights_are_never_checkpointed(tmp_path, vgg_weights_path):
    # A style weight this large makes the first step's gradient infinite, so Adam's update
    # writes NaN into the weights while the first loss is still finite.
    config = small_config(tmp_path, steps=4, style_weight=1e38)
    with pytest.raises(trainer.TrainingDiverged) as raised:
        trainer.train(config, verbose=0)
    message = str(raised.value)
    for _, path in _checkpoints(tmp_path):
        assert _all_finite(path), path
    if _checkpoints(tmp_path):
        assert _checkpoints(tmp_path)[-1][1] in message
    else:
        assert "no good checkpoint" in message
    assert "\n" not in message


# -- 3: a damaged newest checkpoint falls back to the newest readable one --------------------
@pytest.mark.slow
def test_a_truncated_newest_checkpoint_falls_back_to_an_older_one(tmp_path, two_step_run,
                                                                  caplog, no_export):
    copy_run(two_step_run, tmp_path)
    (_, older), (_, newest) = _checkpoints(tmp_path)
    with open(newest, "rb") as f:
        data = f.read()
    with open(newest, "wb") as f:
        f.write(data[: len(data) // 2])
    result = trainer.train(small_config(tmp_path, steps=3), verbose=0)
    assert (result["steps"], result["trained_steps"]) == (3, 2)  # resumed at step 1
    assert any("damaged" in r.getMessage() and newest in r.getMessage() for r in caplog.records)


@pytest.mark.slow
def test_no_readable_checkpoint_is_one_line_and_keeps_them(tmp_path, two_step_run):
    copy_run(two_step_run, tmp_path)
    for _, path in _checkpoints(tmp_path):
        with open(path, "wb") as f:
            f.write(b"PK\x03\x04 not a zip any more")
    with pytest.raises(config_lib.ConfigError, match="no readable checkpoint") as raised:
        trainer.train(small_config(tmp_path, steps=3), verbose=0)
    assert "\n" not in str(raised.value)
    assert len(_checkpoints(tmp_path)) == 2  # nothing of the user's was removed


@pytest.mark.slow
def test_a_checkpoint_with_nan_is_not_resumed_from(tmp_path, two_step_run, no_export):
    copy_run(two_step_run, tmp_path)
    (_, older), (_, newest) = _checkpoints(tmp_path)
    with np.load(newest) as f:
        arrays = {k: f[k] for k in f.files}
    arrays["net_0"] = arrays["net_0"] * np.nan
    np.savez(newest, **arrays)
    with pytest.raises(checkpoints.CheckpointError, match="NaN"):
        checkpoints.read_checkpoint(newest)
    result = trainer.train(small_config(tmp_path, steps=3), verbose=0)
    assert result["trained_steps"] == 2


# -- 4: a folder in which no image can be read stops with one line, on both loaders ----------
@pytest.mark.parametrize("loader", ["tf_data", "py_dataset"])
def test_a_folder_of_unreadable_images_stops_with_one_line(tmp_path, vgg_weights_path, loader):
    folder = tmp_path / "bad"
    folder.mkdir()
    (folder / "a.jpg").write_bytes(b"\xff\xd8\xff\xe0 not really a jpeg")
    (folder / "b.png").write_bytes(b"")
    config = small_config(tmp_path, steps=3, train_data=str(folder), loader=loader)
    with pytest.raises(config_lib.ConfigError, match="none of its images can be read") as e:
        trainer.train(config, verbose=0)
    assert str(e.value).startswith("--train_data: ") and "\n" not in str(e.value)
    assert not os.path.exists(tmp_path / "export")  # nothing exported


# -- 5: files that are not files: links to devices, FIFOs; a size bound before reading -------
def _not_files(folder):
    os.symlink("/dev/zero", folder / "zero.png")
    os.mkfifo(folder / "pipe.jpg")


def test_devices_and_fifos_are_refused_without_reading(tmp_path, monkeypatch):
    from kperceptual.imaging import images

    _not_files(tmp_path)
    with pytest.raises(images.ImageError, match="character device, not a regular file"):
        images.read_image(str(tmp_path / "zero.png"))
    with pytest.raises(images.ImageError, match="named pipe"):
        images.read_image(str(tmp_path / "pipe.jpg"))  # would block in open() without O_NONBLOCK
    big = tmp_path / "big.png"
    big.write_bytes(b"\x89PNG" + b"\0" * 2000)
    monkeypatch.setattr(images, "MAX_FILE_BYTES", 1000)
    with pytest.raises(images.ImageError, match="over the limit of 1000"):
        images.read_image(str(big))


def test_a_flagfile_or_config_json_that_is_not_a_file_is_one_line(tmp_path):
    import subprocess
    import sys

    from helpers import REPO

    os.mkfifo(tmp_path / "style.flags")  # absl's read would block for ever
    env = dict(os.environ, PYTHONPATH=REPO, TF_CPP_MIN_LOG_LEVEL="3")
    for verb in ("train", "stylize"):
        done = subprocess.run([sys.executable, "-m", f"kperceptual.{verb}",
                               f"--flagfile={tmp_path / 'style.flags'}"], capture_output=True,
                              text=True, timeout=120, env=env, cwd=tmp_path)
        assert done.returncode == 2
        # (stylize imports TensorFlow, whose start-up lines may come first)
        assert done.stderr.strip().splitlines()[-1] == (f"kperceptual.{verb}: --flagfile: "
                                       f"{tmp_path / 'style.flags'}: a named pipe (FIFO), not a regular "
                                       "file; not read")
    config = small_config(tmp_path)
    os.makedirs(config.model_dir)
    os.symlink("/dev/zero", os.path.join(config.model_dir, "config.json"))
    with pytest.raises(config_lib.ConfigError, match="config.json: unreadable .*character "
                                                     "device, not a regular file"):
        trainer.train(config, verbose=0)


def test_stylize_goes_on_past_a_device_link_and_a_fifo(tmp_path, photos, tiny_style_model):
    import subprocess
    import sys

    from helpers import REPO
    from kperceptual.imaging import images

    folder = tmp_path / "in"
    folder.mkdir()
    images.write_image(str(folder / "good.png"), images.resize_long_side(photos["chelsea"], 32))
    _not_files(folder)
    env = dict(os.environ, PYTHONPATH=REPO, TF_CPP_MIN_LOG_LEVEL="3")
    result = subprocess.run([sys.executable, "-m", "kperceptual.stylize",
                             f"--model={tiny_style_model}", f"--output={tmp_path / 'out'}",
                             str(folder)], env=env, capture_output=True, text=True, timeout=600)
    assert result.returncode == 1, result.stderr[-2000:]
    lines = result.stderr.splitlines()
    assert sum("zero.png: a character device" in line for line in lines) == 1, lines
    assert sum("pipe.jpg: a named pipe" in line for line in lines) == 1, lines
    assert os.path.isfile(tmp_path / "out" / "good_tiny_style.png")


def test_a_fifo_named_as_a_video_is_refused(tmp_path, tiny_style_model):
    from kperceptual.inference import video

    os.mkfifo(tmp_path / "clip.mp4")
    with pytest.raises(video.VideoError, match="named pipe"):
        video.stylize_video(tiny_style_model, str(tmp_path / "clip.mp4"),
                            str(tmp_path / "out.mp4"))


def test_training_skips_device_links_and_fifos(tmp_path):
    from kperceptual.data import sources as data
    from kperceptual.imaging import images

    folder = tmp_path / "photos"
    folder.mkdir()
    images.write_image(str(folder / "good.png"), np.zeros((40, 40, 3), np.uint8))
    _not_files(folder)
    source = data.TrainingImages(str(folder), 32)
    batch = source.py_dataset(2, num_batches=1, workers=1)[0]
    assert batch.shape == (2, 32, 32, 3)
    assert sorted(os.path.basename(k) for k in source.skipped) == ["pipe.jpg", "zero.png"]


# -- 7: results are written atomically: an interrupted save leaves the previous file whole ---
@pytest.mark.slow
def test_an_interrupted_final_save_keeps_the_previous_keras_file(tmp_path, two_step_run,
                                                                 monkeypatch):
    first = {"keras_path": copy_run(two_step_run, tmp_path)["keras_path"]}
    before = open(first["keras_path"], "rb").read()

    def dies_half_way(self, path, *args, **kwargs):  # as kill -9 or a full disk would
        with open(path, "wb") as f:
            f.write(before[:100])
        raise OSError(28, "No space left on device")

    monkeypatch.setattr(keras.Model, "save", dies_half_way)
    with pytest.raises(OSError, match="No space left"):
        trainer.train(small_config(tmp_path, steps=3), verbose=0)
    assert open(first["keras_path"], "rb").read() == before
    assert not [n for n in os.listdir(tmp_path / "run") if n.startswith(".tmp-")]


def test_atomic_writes_never_clobber_and_use_unique_temporaries(tmp_path):
    from kperceptual.imaging import files

    target = tmp_path / "a.weights.h5"
    names = {files.temporary_name(str(target)) for _ in range(3)}
    assert len(names) == 3 and all(n.endswith("a.weights.h5") for n in names)
    files.write_atomically(str(target), b"first")
    with pytest.raises(FileExistsError, match="--overwrite"):
        with files.atomic_path(str(target), overwrite=False) as tmp:
            open(tmp, "wb").write(b"second")
            target.write_bytes(b"another process won the race")
    assert target.read_bytes() == b"another process won the race"
    assert os.listdir(tmp_path) == ["a.weights.h5"]
    stale = tmp_path / f"{files.TEMPORARY_PREFIX}999999999-abcd-x.npz"
    stale.write_bytes(b"left by kill -9")
    live = tmp_path / files.temporary_name("x.npz").rpartition("/")[2]
    live.write_bytes(b"being written")
    files.remove_stale_temporaries(str(tmp_path))
    assert not stale.exists() and live.exists()


# -- 8: runs that collide: another objective in a model_dir, two runs at once -----------------
@pytest.mark.slow
def test_another_style_in_an_existing_model_dir_is_refused(tmp_path, two_step_run):
    first = copy_run(two_step_run, tmp_path)
    before = open(first["keras_path"], "rb").read()
    with pytest.raises(config_lib.ConfigError, match=r"^--style_image: .*skimage:hubble_deep_"
                                                     r"field; resume it with the same value"):
        trainer.train(small_config(tmp_path, steps=3, style_image="skimage:coffee"), verbose=0)
    with pytest.raises(config_lib.ConfigError, match="^--style_weight: "):
        trainer.train(small_config(tmp_path, steps=3, style_weight=5.0), verbose=0)
    assert open(first["keras_path"], "rb").read() == before
    assert [s for s, _ in _checkpoints(tmp_path)] == [1, 2]


@pytest.mark.slow
def test_a_model_dir_in_use_is_refused_and_a_killed_runs_lock_is_not(tmp_path,
                                                                    vgg_weights_path,
                                                                    no_export):
    from kperceptual.imaging import files

    lock = tmp_path / "run" / ".lock"
    with files.exclusive_lock(str(lock)):  # as another live run holds it
        with pytest.raises(config_lib.ConfigError, match=r"^--model_dir: .* is in use by "
                                                         r"another training run \(.*held by pid "
                                                         rf"{os.getpid()} on "):
            trainer.train(small_config(tmp_path, steps=1), verbose=0)
    assert not _checkpoints(tmp_path)
    lock.write_text("pid 999999999 on a machine whose run was killed\n")  # stale: nobody holds it
    assert trainer.train(small_config(tmp_path, steps=1), verbose=0)["steps"] == 1


# -- 9: one line where a traceback was -------------------------------------------------------
def test_a_corrupt_config_json_is_one_line(tmp_path, vgg_weights_path):
    (tmp_path / "run").mkdir()
    (tmp_path / "run" / "config.json").write_bytes(b'{"task": "style", \xff')
    with pytest.raises(config_lib.ConfigError, match=r"^--model_dir: .*config.json: unreadable"):
        trainer.train(small_config(tmp_path, steps=1), verbose=0)


def test_counts_beyond_int32_are_refused_before_work(tmp_path):
    with pytest.raises(config_lib.ConfigError, match=r"^--steps: must be at most 2147483647"):
        config_lib.validate(small_config(tmp_path, steps=10 ** 20))
    with pytest.raises(config_lib.ConfigError, match=r"^--learning_rate: must be finite"):
        config_lib.validate(small_config(tmp_path, learning_rate=float("inf")))


def test_a_flagfile_that_is_not_utf8_is_one_line(tmp_path):
    import subprocess
    import sys

    from helpers import REPO

    flagfile = tmp_path / "bad.flags"
    flagfile.write_bytes(b"--steps=5\n--name=\xff\xfe\n")
    result = subprocess.run([sys.executable, "-m", "kperceptual.train", f"--flagfile={flagfile}",
                             "--style_image=skimage:coffee"], cwd=tmp_path, capture_output=True,
                            text=True, env=dict(os.environ, PYTHONPATH=REPO), timeout=300)
    assert result.returncode == 2
    assert result.stderr.strip().splitlines()[-1].startswith(
        f"kperceptual.train: --flagfile: {flagfile}: not UTF-8 text"), result.stderr[-800:]


@pytest.mark.slow
def test_ctrl_c_checkpoints_and_stops_cleanly(tmp_path, vgg_weights_path, monkeypatch,
                                               no_export):
    original = trainer.TrainingMonitor.on_train_batch_end

    def interrupted_after_three(self, batch, logs=None):
        original(self, batch, logs)
        if self.step == 3:
            raise KeyboardInterrupt

    monkeypatch.setattr(trainer.TrainingMonitor, "on_train_batch_end", interrupted_after_three)
    config = small_config(tmp_path, steps=6, checkpoint_every=100)
    with pytest.raises(trainer.TrainingInterrupted, match=r"interrupted at step 3; checkpoint "
                                                         r".*ckpt-00000003.npz kept; run the "
                                                         r"same command again"):
        trainer.train(config, verbose=0)
    assert [s for s, _ in _checkpoints(tmp_path)] == [3]
    monkeypatch.setattr(trainer.TrainingMonitor, "on_train_batch_end", original)
    assert trainer.train(config, verbose=0)["trained_steps"] == 3


@pytest.mark.slow
def test_two_exports_racing_for_a_version_is_one_line(tmp_path, tiny_style_model, monkeypatch):
    from kperceptual.serving import tf_saved_model
    from kperceptual.inference import loading as models

    from kperceptual.serving import tf_saved_model as saved_model

    network = models.load_keras_network(tiny_style_model)
    original = saved_model._open_up

    def another_export_finishes_first(folder):  # just before the rename into place
        original(folder)
        os.makedirs(tmp_path / "tiny" / "1" / "variables")

    monkeypatch.setattr(saved_model, "_open_up", another_export_finishes_first)
    with pytest.raises(FileExistsError, match="another export wrote this version meanwhile"):
        tf_saved_model.export_saved_model(network, str(tmp_path), "tiny")
    assert sorted(os.listdir(tmp_path / "tiny")) == ["1"]  # its temporary folder is gone


# -- 12: trust: a SavedModel's Keras asset is used (safe_mode), its graph is never loaded ----
@pytest.mark.slow
def test_a_saved_model_with_its_network_runs_without_loading_the_graph(tmp_path,
                                                                      tiny_style_model):
    from kperceptual.serving import tf_saved_model
    from kperceptual.inference import stylizer as inference
    from kperceptual.inference import loading as models

    network = models.load_keras_network(tiny_style_model)
    path = tf_saved_model.export_saved_model(network, str(tmp_path), "tiny")
    stylizer = inference.Stylizer(path)
    out = stylizer.image(np.full((24, 24, 3), 100, np.uint8))
    assert out.shape == (24, 24, 3)
    assert not stylizer.model.fn.loaded  # the graph (a program) was never loaded


def test_a_keras_file_holding_python_code_is_refused(tmp_path):
    from kperceptual.inference import loading as models

    inputs = keras.Input((None, None, 3))
    unsafe = keras.Model(inputs, keras.layers.Lambda(lambda x: x * 2)(inputs))
    path = str(tmp_path / "unsafe.keras")
    unsafe.save(path)
    with pytest.raises(ValueError, match="safe_mode") as e:
        models.load_model(path)
    assert str(e.value).startswith(f"{path}: cannot load (") and "\n" not in str(e.value)


def test_malformed_keras_files_are_one_line_naming_them(tmp_path):
    import zipfile

    from kperceptual.inference import loading as models

    (tmp_path / "bad.keras").write_bytes(b"not a zip")
    with zipfile.ZipFile(tmp_path / "broken.keras", "w") as archive:
        archive.writestr("config.json", "{not json")
    for name, why in (("bad.keras", "not a Keras archive"), ("broken.keras", "cannot load")):
        with pytest.raises(ValueError, match=why) as e:
            models.load_model(str(tmp_path / name))
        assert str(e.value).startswith(str(tmp_path / name)) and "\n" not in str(e.value)


# -- 11: a seed gives one run, whether or not the VGG16 weights were fetched in this process --
@pytest.mark.slow
def test_the_seed_gives_the_same_run_when_the_weights_are_converted_in_process(
        tmp_path, vgg_weights_path, monkeypatch, no_export):
    from kperceptual.losses import vgg16_weights as weights

    cached = trainer.train(small_config(tmp_path / "a", steps=1, sample_every=100), verbose=0)
    real_fetch = weights.fetch_torchvision_weights
    calls = []

    def converting_fetch(force=False):  # as a first use does: it builds a VGG16 to convert
        if not calls:
            keras.applications.VGG16(include_top=False, weights=None, input_shape=(None, None, 3))
        calls.append(1)
        return real_fetch(force)

    monkeypatch.setattr(weights, "fetch_torchvision_weights", converting_fetch)
    fetched = trainer.train(small_config(tmp_path / "b", steps=1, sample_every=100), verbose=0)
    assert calls
    for a, b in zip(cached["network"].get_weights(), fetched["network"].get_weights()):
        np.testing.assert_array_equal(a, b)
