"""The style network's output head: the linear head with a straight-through clip keeps a
gradient where the paper's scaled tanh saturates (the cause of pinned black blobs), saved
networks from before the option load with the tanh they had, and a one-style network starts a
multi-style one."""
import numpy as np
import pytest

from kperceptual import networks
from kperceptual.training import trainer
from kperceptual import config as config_lib


def _head_gradient(head):
    net = networks.StyleTransferNetwork(filters=(4, 4, 4), num_residual_blocks=1, head=head)
    out_conv = net.get_layer("out_conv")
    kernel, bias = out_conv.get_weights()
    out_conv.set_weights([kernel, bias - 20.0])  # drive every logit far below zero
    import tensorflow as tf

    x = tf.constant(np.full((1, 16, 16, 3), 200.0, np.float32))
    with tf.GradientTape() as tape:
        y = net(x)
        loss = tf.reduce_mean(tf.square(y - 200.0))
    grad = tape.gradient(loss, out_conv.bias)
    return np.asarray(y), np.abs(np.asarray(grad)).max()


def test_linear_head_keeps_a_gradient_where_tanh_saturates():
    y_tanh, g_tanh = _head_gradient("tanh")
    y_lin, g_lin = _head_gradient("linear")
    assert y_tanh.max() < 0.5 and y_lin.max() == 0.0  # both pinned at black
    assert g_tanh < 1e-6  # the tanh region cannot recover
    assert g_lin > 1.0  # the linear head's loss pulls it back


def test_linear_head_output_is_in_range_and_default():
    net = networks.StyleTransferNetwork(filters=(4, 4, 4), num_residual_blocks=1)
    assert net.head == "linear" and net.get_config()["head"] == "linear"
    y = np.asarray(net(np.random.default_rng(0).uniform(0, 255, (1, 20, 24, 3))
                       .astype(np.float32)))
    assert y.shape == (1, 20, 24, 3) and y.min() >= 0 and y.max() <= 255


def test_config_without_head_loads_as_tanh():
    net = networks.StyleTransferNetwork(filters=(4, 4, 4), num_residual_blocks=1, head="tanh")
    config = net.get_config()
    del config["head"]
    assert networks.StyleTransferNetwork.from_config(config).head == "tanh"
    with pytest.raises(ValueError, match="head"):
        networks.StyleTransferNetwork(filters=(4, 4, 4), head="sigmoid")


def test_unknown_head_flag_is_a_config_error(tmp_path):
    config = config_lib.StyleTrainingConfig(style_image="skimage:coffee", head="relu",
                                            train_data="skimage", model_dir=str(tmp_path))
    with pytest.raises(config_lib.ConfigError, match="head"):
        config_lib.validate(config)


def test_one_style_network_widens_to_many(tmp_path):
    one = networks.StyleTransferNetwork(filters=(4, 4, 4), num_residual_blocks=1)
    rng = np.random.default_rng(1)
    one.set_weights([w + rng.normal(0, 0.1, w.shape).astype(np.float32)
                     for w in one.get_weights()])
    path = str(tmp_path / "one.keras")
    one.save(path)
    many = networks.StyleTransferNetwork(filters=(4, 4, 4), num_residual_blocks=1,
                                         num_styles=3, style_names=("a", "b", "c"))
    trainer.init_network_from(many, path)
    x = rng.uniform(0, 255, (1, 16, 16, 3)).astype(np.float32)
    expected = np.asarray(one(x))
    for i in range(3):
        got = np.asarray(many([x, np.eye(3, dtype=np.float32)[[i]]]))
        np.testing.assert_allclose(got, expected, atol=1e-3)
