"""The style transformation network: any size in, same size out, pixels in [0, 255], saving."""

import keras
import numpy as np
import pytest

from helpers import random_pixels
from kperceptual import networks


@pytest.fixture(scope="module")
def network():
    return networks.StyleTransferNetwork()


@pytest.mark.parametrize("height,width", [(17, 23), (32, 32), (33, 50), (5, 9)])
def test_output_has_input_size_and_pixel_range(network, height, width):
    out = np.asarray(network(random_pixels((2, height, width, 3))))
    assert out.shape == (2, height, width, 3)
    assert out.min() >= 0.0 and out.max() <= 255.0


@pytest.mark.parametrize("norm,upsample,padding", [("batch", "transpose", "zero"),
                                                   ("instance", "transpose", "reflect"),
                                                   ("batch", "resize", "zero")])
def test_paper_and_peer_variants_build_and_keep_size(norm, upsample, padding):
    net = networks.StyleTransferNetwork(norm=norm, upsample=upsample, padding=padding)
    assert net(random_pixels((1, 21, 30, 3))).shape == (1, 21, 30, 3)
    kinds = {type(layer).__name__ for layer in net.layers}
    assert ("Conv2DTranspose" in kinds) == (upsample == "transpose")
    assert ("BatchNormalization" in kinds) == (norm == "batch")
    assert ("ReflectionPadding2D" in kinds) == (padding == "reflect")


def test_paper_architecture_sizes(network):
    convs = [l for l in network.layers if isinstance(l, keras.layers.Conv2D)]
    assert [(c.filters, c.kernel_size[0], c.strides[0]) for c in convs[:3]] == [
        (32, 9, 1), (64, 3, 2), (128, 3, 2)]
    assert len([l for l in network.layers if isinstance(l, keras.layers.Add)]) == 5
    assert (convs[-1].filters, convs[-1].kernel_size[0]) == (3, 9)


def test_keras_file_round_trip_without_custom_objects(network, tmp_path):
    path = str(tmp_path / "net.keras")
    network.save(path)
    loaded = keras.saving.load_model(path)
    assert isinstance(loaded, networks.StyleTransferNetwork)
    assert loaded.get_config() == network.get_config()
    x = random_pixels((1, 19, 26, 3), 3)
    np.testing.assert_allclose(loaded(x), network(x), atol=1e-4)


@pytest.mark.slow
def test_weights_file_round_trip(tmp_path):
    net = networks.StyleTransferNetwork(norm="batch", upsample="transpose")
    path = str(tmp_path / "net.weights.h5")
    net.save_weights(path)
    again = networks.StyleTransferNetwork.from_config(net.get_config())
    again.load_weights(path)
    x = random_pixels((1, 16, 16, 3), 4)
    np.testing.assert_allclose(again(x), net(x), atol=1e-4)


def test_bad_choices_are_refused():
    with pytest.raises(ValueError, match="normalisation"):
        networks.StyleTransferNetwork(norm="layer")
    with pytest.raises(ValueError, match="upsampling"):
        networks.StyleTransferNetwork(upsample="pixelshuffle")
