"""``--filters`` and ``--init_from`` a narrower style network: widened with its function kept."""

import numpy as np
import pytest

from kperceptual import config as config_lib
from kperceptual import networks
from kperceptual.errors import FlagError
from kperceptual.training import init_from


def _perturbed(network, seed):
    rng = np.random.default_rng(seed)
    network.set_weights([w + rng.normal(size=w.shape).astype("float32") * 0.05
                         for w in network.get_weights()])
    return network


def test_a_widened_network_computes_what_the_narrow_one_did(tmp_path):
    names = ["a", "b", "c"]
    narrow = _perturbed(networks.StyleTransferNetwork((8, 16, 16), 2, num_styles=3,
                                                      style_names=names), 0)
    path = str(tmp_path / "narrow.keras")
    narrow.save(path)
    wide = networks.StyleTransferNetwork((12, 16, 24), 2, num_styles=3, style_names=names)
    init_from.init_network_from(wide, path)
    rng = np.random.default_rng(1)
    x = rng.uniform(0, 255, (2, 30, 34, 3)).astype("float32")
    style = np.array([[1, 0, 0], [0.2, 0.3, 0.5]], np.float32)
    np.testing.assert_allclose(wide([x, style]).numpy(), narrow([x, style]).numpy(), atol=1e-3)
    # The new channels are there to learn: their own kernels are not zero, and a step of
    # training changes the output (it would not if the new channels had no way in or out).
    down3 = wide.get_layer("down3").kernel.numpy()
    assert np.abs(down3[..., 16:]).max() > 0
    assert np.abs(wide.get_layer("res1_conv1").kernel.numpy()[:, :, 16:, :]).max() == 0
    assert np.abs(wide.get_layer("res1_conv2_norm").gamma.numpy()[:, 16:]).max() == 0


def test_a_wider_init_from_that_does_not_fit_is_refused(tmp_path):
    narrow = networks.StyleTransferNetwork((8, 16, 16), 2)
    path = str(tmp_path / "narrow.keras")
    narrow.save(path)
    deeper = networks.StyleTransferNetwork((12, 16, 24), 3)  # another residual block
    with pytest.raises(config_lib.ConfigError, match="init_from"):
        init_from.init_network_from(deeper, path)


@pytest.mark.parametrize("filters", [("32", "64"), ("32", "x", "128"), ("32", "0", "128")])
def test_bad_filters_name_the_flag(filters):
    config = config_lib.StyleTrainingConfig(style_image="skimage:hubble_deep_field",
                                            filters=filters)
    with pytest.raises(FlagError, match="filters"):
        config_lib.validate(config)


def test_filters_reach_the_network_and_the_resume_check():
    config = config_lib.StyleTrainingConfig(style_image="skimage:hubble_deep_field",
                                            filters=("16", "32", "48"))
    config_lib.validate(config)
    assert config.make_network().filters == (16, 32, 48)
    assert config.network_config()["filters"] == [16, 32, 48]


def test_a_one_style_network_starts_from_one_style_of_a_multi_style_one(tmp_path):
    names = ["a", "b", "c"]
    zoo = _perturbed(networks.StyleTransferNetwork((8, 16, 16), 2, num_styles=3,
                                                   style_names=names), 2)
    path = str(tmp_path / "zoo.keras")
    zoo.save(path)
    solo = networks.StyleTransferNetwork((8, 16, 16), 2)
    init_from.init_network_from(solo, path, style="b")
    x = np.random.default_rng(3).uniform(0, 255, (2, 28, 36, 3)).astype("float32")
    np.testing.assert_allclose(solo(x).numpy(), zoo([x, np.tile([[0, 1, 0]], (2, 1))]).numpy(),
                               atol=1e-3)
    assert not np.allclose(solo(x).numpy(), zoo([x, np.tile([[1, 0, 0]], (2, 1))]).numpy(),
                           atol=1e-3)
    # A style it lacks, or another head, is one line naming --init_from.
    with pytest.raises(config_lib.ConfigError, match="init_from.*no style 'd'.*a, b, c"):
        init_from.init_network_from(solo, path, style="d")
    with pytest.raises(config_lib.ConfigError, match="init_from.*head=linear"):
        init_from.init_network_from(networks.StyleTransferNetwork((8, 16, 16), 2, head="tanh"),
                                    path, style="a")


def test_one_of_a_multi_style_networks_styles_is_fine_tuning_not_adding(tmp_path):
    zoo = networks.StyleTransferNetwork((8, 16, 16), 2, num_styles=2,
                                        style_names=["hubble_deep_field", "b"])
    path = str(tmp_path / "zoo.keras")
    zoo.save(path)
    config = config_lib.StyleTrainingConfig(style_image="skimage:hubble_deep_field",
                                            init_from=path, model_dir=str(tmp_path / "run"))
    assert init_from.resolve_init_from(config).inherited_styles == ()
