"""Conditional instance normalisation (Dumoulin et al. 2017): one network, N styles.

The layer's statistics and mixing, the multi-style network's shapes, serialisation and style
weights, ``bind_style`` (the one-style network of a mix), and the unchanged N = 1 network."""

import os

import keras
import numpy as np
import pytest

from helpers import REPO, STYLES, random_pixels, randomise_styles, small
from kperceptual import networks

@pytest.fixture(scope="module")
def multi():
    return randomise_styles(small())


def one_hot(indices, n=3):
    return np.eye(n, dtype=np.float32)[list(indices)]


def test_layer_normalises_per_example_and_channel_and_mixes_parameters():
    layer = networks.ConditionalInstanceNormalization(2)
    x = random_pixels((3, 5, 7, 4))
    layer.build((x.shape, (None, 2)))
    gamma = np.array([[1, 2, 3, 4], [0.5, 0.5, 0.5, 0.5]], np.float32)
    beta = np.array([[0, 1, 0, 1], [10, 10, 10, 10]], np.float32)
    layer.set_weights([gamma, beta])
    w = np.array([[1, 0], [0, 1], [0.25, 0.75]], np.float32)
    y = keras.ops.convert_to_numpy(layer([x, w]))
    normalised = (x - x.mean(axis=(1, 2), keepdims=True)) / np.sqrt(
        x.var(axis=(1, 2), keepdims=True) + 1e-5)
    expected = normalised * (w @ gamma)[:, None, None] + (w @ beta)[:, None, None]
    np.testing.assert_allclose(y, expected, rtol=1e-4, atol=1e-4)
    assert layer.gamma.shape == (2, 4) and layer.beta.shape == (2, 4)


def test_one_hot_matches_group_normalization_with_that_styles_row():
    x = random_pixels((2, 6, 6, 5))
    cin = networks.ConditionalInstanceNormalization(3)
    cin.build((x.shape, (None, 3)))
    rng = np.random.default_rng(1)
    gamma, beta = rng.uniform(0.5, 2, (3, 5)), rng.normal(0, 1, (3, 5))
    cin.set_weights([gamma.astype(np.float32), beta.astype(np.float32)])
    gn = keras.layers.GroupNormalization(groups=-1, epsilon=1e-5)
    gn.build(x.shape)
    gn.set_weights([gamma[2].astype(np.float32), beta[2].astype(np.float32)])
    np.testing.assert_allclose(keras.ops.convert_to_numpy(cin([x, one_hot([2, 2])])),
                               keras.ops.convert_to_numpy(gn(x)), rtol=1e-4, atol=1e-4)


def test_multi_style_network_shapes_inputs_and_shared_convolutions(multi):
    assert [tuple(i.shape) for i in multi.inputs] == [(None, None, None, 3), (None, 3)]
    norms = [l for l in multi.layers if isinstance(l, networks.ConditionalInstanceNormalization)]
    assert len(norms) == 3 + 2 + 2 and all(l.gamma.shape[0] == 3 for l in norms)
    one = small(1)
    # Every weight but the normalisation's is the one-style network's, by name and shape.
    ours = {w.path: tuple(w.shape) for w in multi.weights}
    theirs = {w.path: tuple(w.shape) for w in one.weights}
    assert ours.keys() == theirs.keys()
    assert all(ours[k] == theirs[k] or (ours[k] == (3,) + theirs[k] and "norm" in k)
               for k in ours)
    out = np.asarray(multi([random_pixels((3, 21, 30, 3)), one_hot([0, 1, 2])]))
    assert out.shape == (3, 21, 30, 3) and 0 <= out.min() and out.max() <= 255
    # Different styles give different outputs for the same photo.
    same = np.repeat(random_pixels((1, 24, 24, 3)), 3, axis=0)
    out = np.asarray(multi([same, one_hot([0, 1, 2])]))
    assert np.abs(out[0] - out[1]).mean() > 1 and np.abs(out[1] - out[2]).mean() > 1


def test_multi_style_network_saves_and_loads(tmp_path, multi):
    path = str(tmp_path / "multi.keras")
    multi.save(path)
    loaded = keras.saving.load_model(path)
    assert loaded.num_styles == 3 and loaded.style_names == STYLES
    x, w = random_pixels((2, 20, 20, 3)), one_hot([1, 2])
    np.testing.assert_array_equal(np.asarray(loaded([x, w])), np.asarray(multi([x, w])))


def test_one_style_network_is_unchanged(tmp_path):
    net = networks.StyleTransferNetwork(filters=(8, 8, 8), num_residual_blocks=1)
    assert len(net.inputs) == 1
    assert not any(isinstance(l, networks.ConditionalInstanceNormalization) for l in net.layers)
    config = net.get_config()
    assert "num_styles" not in config and "style_names" not in config
    assert networks.num_styles(net) == 1 and networks.style_names(net) == ()


SHIPPED = os.path.join(REPO, "savedmodels", "starry_night", "2", "assets", "network.keras")


def test_shipped_one_style_network_loads_and_rebuilds_identically():
    shipped = keras.saving.load_model(SHIPPED)
    assert networks.num_styles(shipped) == 1
    rebuilt = networks.StyleTransferNetwork.from_config(shipped.get_config())
    assert [w.path for w in rebuilt.weights] == [w.path for w in shipped.weights]
    rebuilt.set_weights(shipped.get_weights())
    x = random_pixels((1, 40, 36, 3))
    np.testing.assert_array_equal(np.asarray(rebuilt(x)), np.asarray(shipped(x)))


def test_style_weights_from_names_mixes_and_indices():
    np.testing.assert_array_equal(networks.style_weights(STYLES, "wave"), [0, 1, 0])
    np.testing.assert_allclose(networks.style_weights(STYLES, "starry_night:0.7,udnie:0.3"),
                               [0.7, 0, 0.3], rtol=1e-6)
    np.testing.assert_allclose(networks.style_weights(STYLES, "wave,udnie"), [0, .5, .5])
    np.testing.assert_allclose(networks.style_weights(STYLES, "wave:2,udnie:2"), [0, .5, .5])
    np.testing.assert_array_equal(networks.style_weights(STYLES, 2), [0, 0, 1])
    np.testing.assert_array_equal(networks.style_weights(STYLES, [1, 0, 0]), [1, 0, 0])
    with pytest.raises(ValueError, match="unknown style 'mosaic'; this network has: "
                                         "starry_night, wave, udnie"):
        networks.style_weights(STYLES, "mosaic")
    for bad in ("wave:-1", "wave:0", "wave:x"):
        with pytest.raises(ValueError):
            networks.style_weights(STYLES, bad)


def test_bind_style_is_the_one_style_network_of_the_mix(multi):
    x = random_pixels((2, 28, 20, 3))
    for spec in ("wave", "starry_night:0.7,udnie:0.3"):
        w = networks.style_weights(STYLES, spec)
        bound = networks.bind_style(multi, w)
        assert len(bound.inputs) == 1 and networks.num_styles(bound) == 1
        assert not any(isinstance(l, networks.ConditionalInstanceNormalization)
                       for l in bound.layers)
        expected = np.asarray(multi([x, np.repeat(w[None], 2, axis=0)]))
        np.testing.assert_allclose(np.asarray(bound(x)), expected, atol=2e-3)
    one = small(1)
    assert networks.bind_style(one, [1.0]) is one


def test_bind_style_keeps_the_output_head():
    tanh = randomise_styles(small(head="tanh"))
    bound = networks.bind_style(tanh, networks.style_weights(STYLES, "wave"))
    assert bound.head == "tanh"
    x = random_pixels((1, 24, 24, 3))
    np.testing.assert_allclose(np.asarray(bound(x)),
                               np.asarray(tanh([x, one_hot([1])])), atol=2e-3)


def test_multi_style_needs_instance_norm_and_distinct_names():
    with pytest.raises(ValueError, match="instance"):
        small(2, norm="batch")
    with pytest.raises(ValueError, match="distinct"):
        small(2, style_names=("a", "a"))


_OTHER_BACKEND = """
import sys, numpy as np
sys.path.insert(0, sys.argv[1])
from helpers import small
import keras
net = small()
with np.load(sys.argv[2]) as f:
    net.set_weights([f[k] for k in f.files])
x, w = np.load(sys.argv[3]), np.load(sys.argv[4])
np.save(sys.argv[5], np.asarray(keras.ops.convert_to_numpy(net([x, w]))))
path = sys.argv[5] + ".keras"
net.save(path)
print(keras.backend.backend())
"""


@pytest.mark.slow
@pytest.mark.parametrize("backend", ["jax", "torch"])
def test_jax_and_torch_compute_the_same_and_read_each_others_files(backend, tmp_path, multi):
    import subprocess
    import sys

    np.savez(tmp_path / "weights.npz", *multi.get_weights())
    x, w = random_pixels((2, 20, 28, 3)), np.array([[0, 1, 0], [0.2, 0.3, 0.5]], np.float32)
    np.save(tmp_path / "x.npy", x)
    np.save(tmp_path / "w.npy", w)
    done = subprocess.run(
        [sys.executable, "-c", _OTHER_BACKEND, os.path.join(REPO, "tests"),
         str(tmp_path / "weights.npz"), str(tmp_path / "x.npy"), str(tmp_path / "w.npy"),
         str(tmp_path / "out.npy")], capture_output=True, text=True, timeout=600, cwd=REPO,
        env={**os.environ, "KERAS_BACKEND": backend, "PYTHONPATH": REPO,
             "CUDA_VISIBLE_DEVICES": ""})
    assert done.returncode == 0, done.stderr[-3000:]
    assert done.stdout.strip().splitlines()[-1] == backend
    expected = np.asarray(multi([x, w]))
    np.testing.assert_allclose(np.load(tmp_path / "out.npy"), expected, atol=1e-2)
    theirs = keras.saving.load_model(str(tmp_path / "out.npy.keras"))  # saved there, loaded here
    assert theirs.style_names == STYLES
    np.testing.assert_allclose(np.asarray(theirs([x, w])), expected, atol=1e-2)


def test_mixed_bfloat16_network_stays_close_to_float32(multi):
    from kperceptual.networks.precision import dtype_policy

    with dtype_policy("mixed_bfloat16"):
        mixed = small()
    mixed.set_weights(multi.get_weights())
    norm = next(l for l in mixed.layers
                if isinstance(l, networks.ConditionalInstanceNormalization))
    assert norm.compute_dtype == "bfloat16" and norm.gamma.dtype == "float32"
    x, w = random_pixels((2, 24, 24, 3)), one_hot([0, 2])
    out = np.asarray(mixed([x, w]))
    assert out.dtype == np.float32
    assert np.abs(out - np.asarray(multi([x, w]))).mean() < 3
