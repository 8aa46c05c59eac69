"""Training one network for several styles (conditional instance normalisation), adding a
style to a trained multi-style network (--init_from: only the new style's parameters train),
and fine-tuning: config, data, the per-example objective and short runs."""

import os

import keras
import numpy as np
import pytest

from helpers import config_json, run_worker, small_config
from kperceptual import config as config_lib
from kperceptual.data import sources as data
from kperceptual.imaging import images
from kperceptual.losses import objective as objectives
from kperceptual import networks
from kperceptual.training import trainer
from kperceptual.data import tf_pipeline

STYLES = "skimage:hubble_deep_field,skimage:immunohistochemistry"


def test_style_image_list_and_folder_give_styles_named_by_file_stems(tmp_path, photos):
    config = small_config(tmp_path, style_image=STYLES, name="")
    assert config.style_names() == ("hubble_deep_field", "immunohistochemistry")
    assert config.name == "hubble_deep_field-immunohistochemistry"
    assert config.network_config()["num_styles"] == 2
    folder = tmp_path / "styles"
    folder.mkdir()
    for name in ("wave", "candy"):
        images.write_image(str(folder / f"{name}.png"), photos["coffee"][:64, :64])
    config = small_config(tmp_path, style_image=str(folder), name="")
    assert config.style_names() == ("candy", "wave") and config.name == "styles"
    config_lib.validate(config)
    one = small_config(tmp_path)
    assert "num_styles" not in one.network_config()  # the paper's network, as before


@pytest.mark.parametrize("style_image,norm,message", [
    ("skimage:hubble_deep_field,missing.jpg", "instance", "--style_image: missing.jpg: no such"),
    ("skimage:coffee,skimage:coffee", "instance", "--style_image: style names .* coffee comes"),
    ("skimage:coffee,", "instance", "--style_image: .*empty entry"),
    (STYLES, "batch", "--norm: several styles need --norm=instance"),
])
def test_bad_style_lists_get_one_line_naming_the_flag(tmp_path, style_image, norm, message):
    with pytest.raises(config_lib.ConfigError, match=message):
        config_lib.validate(small_config(tmp_path, style_image=style_image, norm=norm))


def test_examples_take_styles_in_turn_in_both_loaders():
    source = data.MultiStyleImages("skimage", 32, styles=(3, 5), names=("wave", "udnie"))
    assert source.describe().endswith(", styles wave, udnie in turn")
    one = data.MultiStyleImages("skimage", 32, styles=(10,), names=("hubble_deep_field",))
    assert one.describe().endswith(", style hubble_deep_field")  # its index is no name
    with pytest.raises(data.DataError, match="1 style names for 2 styles"):
        data.MultiStyleImages("skimage", 32, styles=(3, 5), names=("wave",))
    py = source.py_dataset(batch_size=3, num_batches=2)
    first, second = py[0], py[1]
    assert set(first) == {"pixels", "style"} and first["pixels"].shape == (3, 32, 32, 3)
    np.testing.assert_array_equal(first["style"], [3, 5, 3])
    np.testing.assert_array_equal(second["style"], [5, 3, 5])
    tf_batches = list(tf_pipeline.dataset(source, batch_size=3).take(2))
    for ours, theirs in zip((first, second), tf_batches):
        np.testing.assert_array_equal(ours["pixels"], theirs["pixels"].numpy())
        np.testing.assert_array_equal(ours["style"], theirs["style"].numpy())


def test_objective_scores_each_example_against_its_own_style(loss_net, photos):
    styles = [images.resize_long_side(photos[n], 64).astype(np.float32)
              for n in ("astronaut", "coffee")]
    kwargs = dict(content_weight=1.0, style_weight=1e5, tv_weight=1e-8, style_reduction="mean")
    both = objectives.PerceptualObjective(
        loss_net, objectives.style_targets_from_images(loss_net, styles, ("relu1_2", "relu2_2")),
        style_layers=("relu1_2", "relu2_2"), **kwargs)
    x = np.stack([images.resize_and_center_crop(photos["chelsea"], 32)] * 2).astype(np.float32)
    y = x[::-1, ::-1].copy()
    terms = both(y, both.content_targets(x), styles=np.array([1, 0]))
    for i, style in ((0, styles[1]), (1, styles[0])):
        one = objectives.PerceptualObjective(
            loss_net, objectives.style_targets_from_image(loss_net, style, ("relu1_2", "relu2_2")),
            style_layers=("relu1_2", "relu2_2"), **kwargs)
        single = one(y[i:i + 1], one.content_targets(x[i:i + 1]))
        np.testing.assert_allclose(np.asarray(terms["total"])[i], np.asarray(single["total"])[0],
                                   rtol=1e-5)


def _weights_by_path(network):
    return {w.path: keras.ops.convert_to_numpy(w) for w in network.weights}


def _assert_styles_added(ours, source, new_styles=1):
    """``ours`` (weights by path) is ``source``'s with ``new_styles`` styles added: every
    shared convolution and bias bit-identical, each conditional instance normalisation's old
    rows too, and every new row trained away from the old rows' mean it starts at."""
    assert ours.keys() == source.keys()
    for path, value in source.items():
        if value.ndim == 2:  # a conditional instance normalisation's gamma or beta
            old = len(value)
            np.testing.assert_array_equal(ours[path][:old], value, err_msg=path)
            assert len(ours[path]) == old + new_styles, path
            for new in range(old, old + new_styles):
                assert not np.array_equal(ours[path][new], value.mean(axis=0)), (path, new)
        else:
            np.testing.assert_array_equal(ours[path], value, err_msg=path)


@pytest.fixture(scope="module")
def two_style_run(tmp_path_factory, vgg_weights_path):
    tmp_path = tmp_path_factory.mktemp("two_styles")
    config = small_config(tmp_path, style_image=STYLES, name="two", steps=2)
    return trainer.train(config, verbose=0), tmp_path


@pytest.mark.slow
def test_a_multi_style_run_trains_and_saves_every_style(two_style_run):
    result, _ = two_style_run
    network = keras.saving.load_model(result["keras_path"])
    assert network.style_names == ("hubble_deep_field", "immunohistochemistry")
    gammas = [l.gamma.numpy() for l in network.layers
              if isinstance(l, networks.ConditionalInstanceNormalization)]
    # Both styles were trained (round robin: batch 2 holds one example of each).
    assert all(np.any(g[0] != 1) and np.any(g[1] != 1) for g in gammas)
    assert os.path.isdir(result["export_path"])


@pytest.mark.slow
@pytest.mark.parametrize("ema", [0.0, 0.9])
def test_adding_a_style_trains_only_its_parameters(two_style_run, tmp_path, ema, no_export):
    result, _ = two_style_run
    source = keras.saving.load_model(result["keras_path"])
    config = small_config(tmp_path, style_image="skimage:retina", name="three", steps=3,
                          init_from=result["keras_path"], learning_rate=1e-2, ema=ema)
    added = trainer.train(config, verbose=0)["network"]
    assert added.style_names == ("hubble_deep_field", "immunohistochemistry", "retina")
    _assert_styles_added(_weights_by_path(added), _weights_by_path(source))
    x = np.random.default_rng(0).uniform(0, 255, (2, 24, 24, 3)).astype(np.float32)
    old = np.eye(2, dtype=np.float32)
    np.testing.assert_array_equal(np.asarray(added([x, np.pad(old, ((0, 0), (0, 1)))])),
                                  np.asarray(source([x, old])))


@pytest.mark.slow
def test_adding_a_style_on_two_replicas_keeps_the_shared_weights(two_style_run, tmp_path):
    # The network it starts from is read outside the strategy's scope and copied into
    # mirrored variables (a copy per replica): every copy must hold it, and train only the
    # new style's rows. In a process of its own: MirroredStrategies in one process share
    # collective keys, and an earlier test's strategy collides with this one's.
    result, _ = two_style_run
    source = _weights_by_path(keras.saving.load_model(result["keras_path"]))
    config = config_json(tmp_path, style_image="skimage:retina", name="three", steps=1,
                         init_from=result["keras_path"], learning_rate=1e-2, ema=0.0)
    added = run_worker("tensorflow", "train_two_replicas", config, tmp_path / "replicas.npz")
    assert (added["steps"], added["replicas"]) == (1, 2)
    with np.load(tmp_path / "replicas.npz") as f:
        copies = {key: f[key] for key in f.files}
    for replica in "01":
        _assert_styles_added({key.partition("|")[2]: value for key, value in copies.items()
                              if key.startswith(replica + "|")}, source)


def test_init_from_with_some_of_its_styles_is_refused(two_style_run, tmp_path):
    result, _ = two_style_run
    config = small_config(tmp_path, style_image="skimage:hubble_deep_field,skimage:retina",
                          init_from=result["keras_path"])
    with pytest.raises(config_lib.ConfigError, match="--style_image: hubble_deep_field: already "
                                                     "a style of"):
        trainer.train(config, verbose=0)


@pytest.mark.slow
def test_tuning_one_style_trains_only_its_parameters_and_resumes(two_style_run, tmp_path,
                                                                no_export):
    result, _ = two_style_run
    source = keras.saving.load_model(result["keras_path"])
    config = small_config(tmp_path, style_image="skimage:immunohistochemistry", name="", steps=3,
                          init_from=result["keras_path"], tune_styles=True, learning_rate=1e-2,
                          ema=0.9)
    assert config.name == "immunohistochemistry_tuned"
    resolved = trainer.resolve_init_from(config)
    assert resolved.style_names() == ("hubble_deep_field", "immunohistochemistry")
    assert resolved.trained_styles() == (1,)
    tuned = trainer.train(config, verbose=0)["network"]
    assert tuned.style_names == source.style_names
    ours, theirs = _weights_by_path(tuned), _weights_by_path(source)
    assert ours.keys() == theirs.keys()
    for path, value in theirs.items():
        if value.ndim == 2:  # a conditional instance normalisation's gamma or beta
            np.testing.assert_array_equal(ours[path][0], value[0], err_msg=path)
            assert not np.array_equal(ours[path][1], value[1]), path
        else:  # shared convolutions and biases: bit-identical
            np.testing.assert_array_equal(ours[path], value, err_msg=path)
    x = np.random.default_rng(0).uniform(0, 255, (1, 24, 24, 3)).astype(np.float32)
    first = np.array([[1, 0]], np.float32)
    np.testing.assert_array_equal(np.asarray(tuned([x, first])), np.asarray(source([x, first])))
    # Resumed without the flag, the run's record keeps the styles and what trains.
    again = small_config(tmp_path, style_image="skimage:immunohistochemistry",
                         name="immunohistochemistry_tuned", steps=4,
                         init_from=result["keras_path"], learning_rate=1e-2, ema=0.9)
    resumed = trainer.train(again, verbose=0)
    assert (resumed["steps"], resumed["trained_steps"]) == (4, 1)
    resumed = _weights_by_path(resumed["network"])
    for path, value in theirs.items():
        np.testing.assert_array_equal(resumed[path][0] if value.ndim == 2 else resumed[path],
                                      value[0] if value.ndim == 2 else value, err_msg=path)


def test_tuned_styles_given_out_of_order_train_against_their_own_images(two_style_run,
                                                                       tmp_path, loss_net):
    result, _ = two_style_run
    config = trainer.resolve_init_from(small_config(
        tmp_path, style_image="skimage:immunohistochemistry,skimage:hubble_deep_field",
        tune_styles=True, init_from=result["keras_path"]))
    assert config.style_names() == ("hubble_deep_field", "immunohistochemistry")
    assert config.trained_styles() == (1, 0)
    targets = config.make_objective(loss_net).style_targets
    for i, name in enumerate(config.style_names()):
        style = images.resize_long_side(images.read_image(f"skimage:{name}"), config.style_size)
        own = objectives.style_targets_from_image(loss_net, style.astype(np.float32),
                                                  config.style_layers)
        for layer, gram in own.items():
            np.testing.assert_allclose(np.asarray(targets[layer])[i], np.asarray(gram)[0],
                                       rtol=1e-5, err_msg=f"{name} {layer}")


def test_tuning_styles_is_refused_in_one_line_where_it_cannot_work(two_style_run, tmp_path,
                                                                   tiny_style_model):
    result, _ = two_style_run
    with pytest.raises(config_lib.ConfigError, match="^--tune_styles: needs --init_from"):
        config_lib.validate(small_config(tmp_path, tune_styles=True))
    config = small_config(tmp_path, style_image="skimage:retina", tune_styles=True,
                          init_from=result["keras_path"])
    with pytest.raises(config_lib.ConfigError, match=r"^--style_image: retina: not a style of "
                                                     r".* \(hubble_deep_field, "
                                                     r"immunohistochemistry\)"):
        trainer.resolve_init_from(config)
    config = small_config(tmp_path, tune_styles=True, init_from=tiny_style_model)
    with pytest.raises(config_lib.ConfigError, match="^--tune_styles: .* has one style"):
        trainer.resolve_init_from(config)
    config = small_config(tmp_path, style_image="skimage:hubble_deep_field", tune_styles=True,
                          init_from=result["keras_path"], head="tanh")
    with pytest.raises(config_lib.ConfigError, match="^--head: .* has head=linear; "
                                                     "--tune_styles keeps the network"):
        trainer.resolve_init_from(config)


@pytest.mark.slow
def test_fine_tuning_a_multi_style_network_with_its_own_styles_trains_everything(
        two_style_run, tmp_path, no_export):
    result, _ = two_style_run
    source = _weights_by_path(keras.saving.load_model(result["keras_path"]))
    config = small_config(tmp_path, style_image=STYLES, name="tuned", steps=1,
                          init_from=result["keras_path"], learning_rate=1e-2)
    tuned = _weights_by_path(trainer.train(config, verbose=0)["network"])
    assert all(not np.array_equal(tuned[p], v) for p, v in source.items() if "kernel" in p)


@pytest.mark.slow
@pytest.mark.parametrize("backend", ["jax", "torch"])
def test_adding_styles_on_jax_and_torch_keeps_the_shared_weights(backend, two_style_run,
                                                                  tmp_path):
    # Keras's own train_step on another backend, with the dict batches of MultiStyleImages
    # (read by keras.utils.PyDataset; each batch holds both new styles) and frozen layers
    # (init_from.freeze_shared_weights: only layer.trainable): the TensorFlow-trained network
    # gets a third and a fourth style there, and its convolutions and first two styles' rows
    # come back bit-identical. No moving average, which would put the old rows back whatever
    # the step did (checkpoints.ema_weights). --no_export: only the .keras file is looked at
    # (test_backends checks a JAX run's SavedModel).
    result, _ = two_style_run
    source = _weights_by_path(keras.saving.load_model(result["keras_path"]))
    config = config_json(tmp_path, style_image="skimage:retina,skimage:coffee", name="four",
                         steps=2, init_from=result["keras_path"], learning_rate=1e-2, ema=0.0,
                         loader="py_dataset")
    added = run_worker(backend, "train", config, tmp_path / "weights.npz", "adam", "--no_export")
    assert added["steps"] == 2
    network = keras.saving.load_model(added["keras_path"])  # here: TensorFlow
    assert network.style_names == ("hubble_deep_field", "immunohistochemistry", "retina",
                                   "coffee")
    _assert_styles_added(_weights_by_path(network), source, new_styles=2)


def test_train_cli_bad_style_list_is_one_line(tmp_path):
    import subprocess
    import sys

    from helpers import REPO

    done = subprocess.run(
        [sys.executable, "-m", "kperceptual.train", "--style_image=skimage:coffee,nowhere.png"],
        cwd=tmp_path, capture_output=True, text=True, timeout=300,
        env={**os.environ, "PYTHONPATH": REPO, "TF_CPP_MIN_LOG_LEVEL": "3"})
    assert done.returncode == 2
    assert done.stderr.strip().splitlines()[-1] == \
        "kperceptual.train: --style_image: nowhere.png: no such file"


@pytest.mark.slow
def test_a_run_adding_a_style_resumes_with_the_same_frozen_weights(two_style_run, tmp_path,
                                                                   no_export):
    import dataclasses

    result, _ = two_style_run
    source = _weights_by_path(keras.saving.load_model(result["keras_path"]))
    config = small_config(tmp_path, style_image="skimage:retina", name="three", steps=1,
                          init_from=result["keras_path"], learning_rate=1e-2)
    trainer.train(config, verbose=0)
    resumed = trainer.train(dataclasses.replace(config, steps=2), verbose=0)
    assert resumed["trained_steps"] == 1
    ours = _weights_by_path(resumed["network"])
    for path, value in source.items():
        np.testing.assert_array_equal(ours[path][:2] if value.ndim == 2 else ours[path], value,
                                      err_msg=path)
