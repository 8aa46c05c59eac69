"""A network's styles: how many, their names, weights for a name or a mix, binding a
multi-style network to one style (or mix), and computing in another precision.
"""

from __future__ import annotations

import keras

import numpy as np

from kperceptual.networks.layers import ConditionalInstanceNormalization
from kperceptual.networks.style_transfer import StyleTransferNetwork


def num_styles(network) -> int:
    """How many styles ``network`` has (1 for every one-input network)."""
    return int(getattr(network, "num_styles", 1) or 1)


def style_names(network) -> tuple[str, ...]:
    """The names of ``network``'s styles; () where it records none (a one-style network)."""
    return tuple(getattr(network, "style_names", None) or ())


def style_weights(names, spec) -> np.ndarray:
    """Style weights (N,) for the styles ``names`` from ``spec``: a name, a style index, a
    weighted mix ``"starry_night:0.7,wave:0.3"`` (weights >= 0, normalised to sum 1; a name
    without a weight counts 1, so ``"a,b"`` is an even mix), or N numbers. Raises ValueError
    with one line (an unknown name lists the network's styles)."""
    names = tuple(names)
    n = len(names)
    if isinstance(spec, (int, np.integer)) and not isinstance(spec, bool):
        if not 0 <= spec < n:
            raise ValueError(f"style index {spec} is not in 0..{n - 1}")
        return np.eye(n, dtype=np.float32)[int(spec)]
    if not isinstance(spec, str):
        weights = np.asarray(spec, np.float32).reshape(-1)
        if weights.shape != (n,):
            raise ValueError(f"expected {n} style weights, got {weights.shape[0]}")
    else:
        weights = np.zeros(n, np.float32)
        for part in filter(None, (p.strip() for p in spec.split(","))):
            name, _, weight = part.rpartition(":") if ":" in part else (part, "", "1")
            name = name.strip()
            if name not in names:
                if name.isdigit() and int(name) < n:
                    name = names[int(name)]
                else:
                    raise ValueError(f"unknown style {name!r}; this network has: "
                                     f"{', '.join(names)}")
            try:
                value = float(weight)
            except ValueError:
                raise ValueError(f"{part!r}: the weight after ':' must be a number") from None
            weights[names.index(name)] += value
    if not np.all(np.isfinite(weights)) or np.any(weights < 0) or weights.sum() <= 0:
        raise ValueError(f"style weights must be >= 0 and not all 0, got {spec!r}")
    return (weights / weights.sum()).astype(np.float32)


def with_precision(network, precision: str):
    """``network`` computing in ``precision`` (``"float32"``, ``"bfloat16"`` or ``"float16"``):
    the same layers and weights (float32 variables) under Keras's mixed policy of that type, the
    output convolution and head in float32 as in training. float32 returns ``network``."""
    if precision == "float32":
        return network
    if precision not in ("bfloat16", "float16"):
        raise ValueError(f"unknown precision {precision!r}; expected float32, bfloat16 or "
                         "float16")
    from kperceptual.networks.precision import dtype_policy

    with dtype_policy(f"mixed_{precision}"):
        copy = network.__class__.from_config(network.get_config())
    copy.set_weights(network.get_weights())
    return copy


def bind_style(network, weights, name=None):
    """The one-style network (``num_styles=1``, the paper's network) of a multi-style network
    at style weights (N,): the same convolutions, and at every normalisation layer the scale and
    shift ``weights @ gamma``, ``weights @ beta`` (what the multi-style network computes for
    those weights). Its weights are copies; a one-style network is returned as it is."""
    if num_styles(network) == 1:
        return network
    weights = np.asarray(weights, np.float32).reshape(-1)
    bound = StyleTransferNetwork(network.filters, network.num_residual_blocks, network.norm,
                                 network.upsample, network.padding, head=network.head,
                                 name=name or network.name)
    source = {layer.name: layer for layer in network.layers}
    for layer in bound.layers:
        if not layer.weights:
            continue
        theirs = source[layer.name]
        if isinstance(theirs, ConditionalInstanceNormalization):
            gamma = weights @ keras.ops.convert_to_numpy(theirs.gamma)
            beta = weights @ keras.ops.convert_to_numpy(theirs.beta)
            layer.set_weights([gamma, beta])
        else:
            layer.set_weights(theirs.get_weights())
    return bound
