"""``networks.training_forward``: the same function and weights as the network, computed as a
training step computes it (upsampling convolutions at the low resolution, the output
convolution by phases)."""

import numpy as np
import pytest
import keras
import tensorflow as tf

from kperceptual import networks
from kperceptual.networks import fast_forward


def _perturbed(network, seed=0):
    """``network`` with every weight moved off its initial value (zero-initialised biases and
    the residual head's zero output conv would hide a wrong phase or tap)."""
    rng = np.random.default_rng(seed)
    for v in network.trainable_variables:
        v.assign(v.numpy() + rng.normal(size=v.shape).astype("float32") * 0.02)
    return network


def _gradients(model, variables, inputs):
    weights = tf.range(3, dtype=tf.float32) + 1.0
    with tf.GradientTape() as tape:
        loss = tf.reduce_mean(tf.cast(model(inputs, training=True), tf.float32) * weights)
    return tape.gradient(loss, variables)


NETWORKS = {
    "style, 3 styles": lambda: networks.StyleTransferNetwork(num_styles=3,
                                                             style_names=["a", "b", "c"]),
    "style, tanh head": lambda: networks.StyleTransferNetwork(head="tanh"),
    "sr x4": lambda: networks.SuperResolutionNetwork(scale=4),
    "sr x8, bicubic residual": lambda: networks.SuperResolutionNetwork(scale=8,
                                                                        residual="bicubic"),
}


@pytest.mark.parametrize("name", NETWORKS)
def test_same_outputs_and_gradients_as_the_network(name):
    # Seeded: float32 rounding in the gradients depends on the start. Unseeded, x8's worst
    # variable was off by 0.01% to 1.3% of its largest gradient in 12 starts (once over the
    # bound below: a fresh-clone CI run, 2026-12-07); seeds 0 to 2 give 0.03% to 0.31%.
    keras.utils.set_random_seed(0)
    network = _perturbed(NETWORKS[name]())
    rng = np.random.default_rng(1)
    # Odd sides: the style networks pad to a multiple of 4 and crop back.
    x = rng.uniform(0, 255, (2, 15, 21, 3) if name.startswith("sr") else (2, 37, 45, 3))
    x = x.astype("float32")
    inputs = [x, np.eye(3, dtype="float32")[[0, 2]]] if "3 styles" in name else x
    view = networks.training_forward(network)
    # The rewritten parts are in the graph, and nothing else was copied.
    kinds = {type(layer).__name__ for layer in view.layers}
    assert "NearestUpsampling2D" not in kinds
    assert {id(v) for v in view.weights} <= {id(v) for v in network.weights}
    np.testing.assert_allclose(view(inputs).numpy(), network(inputs).numpy(), atol=2e-2)
    variables = network.trainable_variables
    got, want = (_gradients(m, variables, inputs) for m in (view, network))
    largest = max(float(np.abs(w).max()) for w in want)
    for v, g, w in zip(variables, got, want):
        # Biases before a normalisation have a zero gradient, up to rounding: each variable
        # within 1% of its own largest gradient, or of 0.1% of the largest of all (rounding
        # reaches 0.2% through three upsamplings; a wrong tap or phase is off by tens of %).
        scale = max(float(np.abs(w).max()), 1e-3 * largest)
        assert float(np.abs(g - w).max()) <= 1e-2 * scale, v.path


def test_upsampled_conv_is_upsample_pad_conv():
    rng = np.random.default_rng(2)
    x = rng.normal(size=(2, 5, 7, 4)).astype("float32")
    kernel = rng.normal(size=(3, 3, 4, 6)).astype("float32")
    bias = rng.normal(size=(6,)).astype("float32")
    up = np.repeat(np.repeat(x, 2, axis=1), 2, axis=2)
    padded = np.pad(up, [(0, 0), (1, 1), (1, 1), (0, 0)], mode="reflect")
    want = tf.nn.conv2d(padded, kernel, 1, "VALID").numpy() + bias
    got = keras.ops.convert_to_numpy(fast_forward.upsampled_conv(x, kernel, bias))
    np.testing.assert_allclose(got, want, atol=1e-4)


def test_phase_conv_is_the_stride_1_convolution():
    rng = np.random.default_rng(3)
    x = rng.normal(size=(1, 20, 14, 5)).astype("float32")
    kernel = rng.normal(size=(9, 9, 5, 3)).astype("float32")
    want = tf.nn.conv2d(x, kernel, 1, "VALID").numpy()
    got = keras.ops.convert_to_numpy(fast_forward.phase_conv(x, kernel))
    np.testing.assert_allclose(got, want, atol=1e-3)


def test_mixed_precision_output_stays_within_bfloat16_rounding(photos):
    """On a real photo with the shipped zoo, in mixed bfloat16: the training forward is as
    close to the float32 network as the network's own mixed-precision forward is."""
    from kperceptual.inference.loading import load_model

    network = load_model("zoo").network
    photo = photos["chelsea"][:96, :128][None].astype("float32")
    inputs = [photo, networks.style_weights(networks.style_names(network), "starry_night")[None]]
    exact = network(inputs).numpy()
    mixed = networks.with_precision(network, "bfloat16")
    own = np.abs(mixed(inputs).numpy() - exact).mean()
    fast = np.abs(networks.training_forward(mixed)(inputs).numpy() - exact).mean()
    assert fast <= 1.25 * own + 0.05, (fast, own)
    assert fast < 1.0  # levels


def test_the_trainer_trains_the_networks_own_weights():
    from kperceptual.training.trainer import PerceptualTrainer

    network = networks.StyleTransferNetwork(filters=(8, 16, 16), num_residual_blocks=1)

    class Objective:
        loss_network = None
        terms = ("total",)

        def content_targets(self, x):
            return x

        def __call__(self, y, targets):
            return {"total": keras.ops.mean((y - targets) ** 2, axis=(1, 2, 3))}

    trainer = PerceptualTrainer(network, Objective())
    assert trainer._training_forward.value is not None
    # Not tracked twice: the trainer's weights are the network's, once.
    assert len(trainer.weights) == len({id(w) for w in trainer.weights})
    trainer.compile(optimizer=keras.optimizers.Adam(1e-2))
    x = np.random.default_rng(4).uniform(0, 255, (4, 24, 24, 3)).astype("float32")
    before = [v.numpy().copy() for v in network.trainable_variables]
    trainer.fit(x, batch_size=4, epochs=1, verbose=0)
    changed = [not np.array_equal(b, v.numpy())
               for b, v in zip(before, network.trainable_variables)]
    assert all(changed[:2]) and changed[-2]  # the first conv and the output conv
    up1 = network.get_layer("up1")
    assert any(not np.array_equal(b, v.numpy()) for b, v in zip(before, network.trainable_variables)
               if v is up1.kernel)
