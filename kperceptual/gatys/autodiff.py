"""Gradients of a function of one tensor, on whichever Keras backend is running.

Layers, networks and losses are backend-neutral (``keras.ops``), but asking for a gradient is
not: TensorFlow has ``GradientTape``, JAX ``jax.grad``, PyTorch ``autograd``. This module is the
one place that knows all three, for code that differentiates with respect to inputs rather than
training a model's weights (the Gatys optimiser differentiates the objective by the pixels).
"""

from __future__ import annotations

import keras


def value_and_grad(fn):
    """Returns ``step(x) -> (fn(x), d sum(fn(x)["total"]) / dx)``.

    ``fn`` maps a tensor to a dict of tensors that holds ``"total"``; ``x`` is anything
    ``keras.ops.convert_to_tensor`` accepts. The result is compiled (``tf.function``,
    ``jax.jit``) on the backends that can.
    """
    backend = keras.backend.backend()
    if backend == "tensorflow":
        import tensorflow as tf

        @tf.function(reduce_retracing=True)
        def tf_step(x):
            with tf.GradientTape() as tape:
                tape.watch(x)
                values = fn(x)
                total = tf.reduce_sum(values["total"])
            return values, tape.gradient(total, x)

        return lambda x: tf_step(tf.convert_to_tensor(x, tf.float32))
    if backend == "jax":
        import jax
        import jax.numpy as jnp

        def total(x):
            values = fn(x)
            return jnp.sum(values["total"]), values

        jax_step = jax.jit(jax.value_and_grad(total, has_aux=True))

        def step(x):
            (_, values), gradient = jax_step(jnp.asarray(x, jnp.float32))
            return values, gradient

        return step
    if backend == "torch":
        import torch

        def torch_step(x):
            x = keras.ops.convert_to_tensor(x, "float32").detach().requires_grad_(True)
            values = fn(x)
            torch.sum(values["total"]).backward()
            return {k: v.detach() for k, v in values.items()}, x.grad

        return torch_step
    raise NotImplementedError(f"no gradients for the Keras backend {backend!r}")
