"""Hostile inputs and faults (issue 15): poisoned and damaged checkpoints, unreadable training
folders, files that are not files, half-written results, colliding runs."""

import os
import zipfile

import keras
import numpy as np
import pytest

from conftest import small_config
from kperceptual import config as config_lib
from kperceptual import trainer


def _checkpoints(tmp_path):
    return trainer.list_checkpoints(str(tmp_path / "run" / "checkpoints"))


def _all_finite(path):
    with np.load(path) as f:
        return all(np.isfinite(f[k]).all() for k in f.files)


# -- 2: the NaN guard never keeps (or names) a poisoned checkpoint ---------------------------
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
def test_a_truncated_newest_checkpoint_falls_back_to_an_older_one(tmp_path, vgg_weights_path,
                                                                  caplog):
    trainer.train(small_config(tmp_path, steps=2), verbose=0)
    (_, older), (_, newest) = _checkpoints(tmp_path)
    with open(newest, "rb") as f:
        data = f.read()
    with open(newest, "wb") as f:
        f.write(data[: len(data) // 2])
    result = trainer.train(small_config(tmp_path, steps=3), verbose=0)
    assert (result["steps"], result["trained_steps"]) == (3, 2)  # resumed at step 1
    assert any("damaged" in r.getMessage() and newest in r.getMessage() for r in caplog.records)


def test_no_readable_checkpoint_is_one_line_and_keeps_them(tmp_path, vgg_weights_path):
    trainer.train(small_config(tmp_path, steps=2), verbose=0)
    for _, path in _checkpoints(tmp_path):
        with open(path, "wb") as f:
            f.write(b"PK\x03\x04 not a zip any more")
    with pytest.raises(config_lib.ConfigError, match="no readable checkpoint") as raised:
        trainer.train(small_config(tmp_path, steps=3), verbose=0)
    assert "\n" not in str(raised.value)
    assert len(_checkpoints(tmp_path)) == 2  # nothing of the user's was removed


def test_a_checkpoint_with_nan_is_not_resumed_from(tmp_path, vgg_weights_path):
    trainer.train(small_config(tmp_path, steps=2), verbose=0)
    (_, older), (_, newest) = _checkpoints(tmp_path)
    with np.load(newest) as f:
        arrays = {k: f[k] for k in f.files}
    arrays["net_0"] = arrays["net_0"] * np.nan
    np.savez(newest, **arrays)
    with pytest.raises(trainer.CheckpointError, match="NaN"):
        trainer.read_checkpoint(newest)
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
