"""Starting a run from another model's weights (``--init_from``): fine-tuning the same network,
or adding styles to a multi-style network while its shared convolutions stay bit-identical
(only the new styles' scale and shift train). Backend-neutral.
"""

from __future__ import annotations

import dataclasses
import json
import os

import numpy as np

from kperceptual import config as config_lib
from kperceptual import networks
from kperceptual.training.checkpoints import list_checkpoints

# Network settings that runs before them did not record, as those runs had them.


def freeze_shared_weights(network) -> None:
    """Makes every layer but the conditional instance normalisations untrainable: adding a
    style trains only the styles' scales and shifts (of those, only the new styles' rows get
    gradients, as only they are in the batches)."""
    for layer in network.layers:
        if not isinstance(layer, networks.ConditionalInstanceNormalization):
            layer.trainable = False


def load_init_network(spec: str, models_dir: str | None = None):
    """The Keras network of the model ``spec`` (a ``.keras`` file, a SavedModel folder or a
    model name in ``models_dir``); raises ``ConfigError`` (``init_from``)."""
    from kperceptual.inference import loading as models

    try:
        source = models.load_model(spec, models_dir).network
    except (FileNotFoundError, ValueError) as e:
        raise config_lib.ConfigError("init_from", str(e)) from e
    if source is None:
        raise config_lib.ConfigError("init_from", f"{spec}: holds no Keras network")
    return source


def resolve_init_from(config):
    """``config`` for a style run whose ``init_from`` is a multi-style network and whose style
    images are all new styles: with that network's styles as ``inherited_styles`` (the run
    adds its styles to them, training only theirs). Any other ``init_from`` is fine-tuning (the
    same shape, every weight trains) and leaves ``config`` as it is. Raises ``ConfigError``
    where the style images repeat some of the network's styles but not exactly all."""
    if (config.task != "style" or not config.init_from or config.inherited_styles
            or config.network_styles):
        return config
    saved = os.path.join(config.model_dir, "config.json")
    if list_checkpoints(os.path.join(config.model_dir, "checkpoints")) and os.path.isfile(saved):
        with open(saved) as f:  # resuming: the run's own record (init_from is not read again)
            saved = json.load(f)
        recorded = {key: tuple(saved[key]) for key in ("inherited_styles", "network_styles")
                    if saved.get(key)}
        _check_tuned_styles(config, recorded.get("network_styles"), config.model_dir)
        return dataclasses.replace(config, **recorded) if recorded else config
    source = load_init_network(config.init_from, config.export_dir)
    theirs = networks.style_names(source) if networks.num_styles(source) > 1 else ()
    ours = config.new_style_names()
    if config.tune_styles:
        if not theirs:
            raise config_lib.ConfigError(
                "tune_styles", f"{config.init_from} has one style; --tune_styles tunes styles "
                               "of a multi-style network (use --init_from alone to fine-tune it)")
        _check_tuned_styles(config, theirs, config.init_from)
        source_config = source.get_config()
        for key, value in config.network_config().items():  # all of it stays as it was
            if (key in source_config and key not in ("num_styles", "style_names")
                    and source_config[key] != value):
                raise config_lib.ConfigError(
                    key, f"{config.init_from} has {key}={source_config[key]}; --tune_styles "
                         "keeps the network as it is (give the same value)")
        return dataclasses.replace(config, network_styles=theirs)
    if not theirs or tuple(ours) == theirs:
        return config
    if len(ours) == 1 and ours[0] in theirs:
        return config  # one of its styles as a one-style network (``narrow_to_style``)
    repeated = [n for n in ours if n in theirs]
    if repeated:
        raise config_lib.ConfigError(
            "style_image", f"{', '.join(repeated)}: already a style of {config.init_from} "
                           f"({', '.join(theirs)}); give only new styles to add them, "
                           "exactly its styles to fine-tune it, or --tune_styles to train only "
                           "the given styles' parameters")
    return dataclasses.replace(config, inherited_styles=theirs)


def _check_tuned_styles(config, network_styles, where: str) -> None:
    """Every style image of a run tuning some styles (``network_styles`` set) names one of
    them; raises ``ConfigError`` (``style_image``) otherwise."""
    if not network_styles:
        return
    missing = [n for n in config.new_style_names() if n not in network_styles]
    if missing:
        raise config_lib.ConfigError(
            "style_image", f"{', '.join(missing)}: not a style of {where} "
                           f"({', '.join(network_styles)}); --tune_styles trains only styles "
                           "the network has")


def _copy_layers(network, source, spec: str, norm_rows) -> None:
    """Copies every weighted layer of ``source`` into the same-named layer of ``network``;
    a conditional instance normalisation's values go through ``norm_rows(values, layer)``
    first. Raises ``ConfigError`` (``init_from``) where the layers differ."""
    ours = {layer.name: layer for layer in network.layers}
    theirs_with_weights = [layer for layer in source.layers if layer.weights]
    if len(theirs_with_weights) != len([layer for layer in network.layers if layer.weights]):
        raise config_lib.ConfigError(
            "init_from", f"{spec}: its layers do not fit this network (another --norm, "
                         "--upsample, --padding or size?)")
    for theirs in theirs_with_weights:
        layer = ours.get(theirs.name)
        values = theirs.get_weights()
        if isinstance(layer, networks.ConditionalInstanceNormalization):
            values = norm_rows(values, layer)
        if layer is None or [tuple(v.shape) for v in values] != \
                [tuple(w.shape) for w in layer.weights]:
            raise config_lib.ConfigError(
                "init_from", f"{spec}: its layer {theirs.name} does not fit this network "
                             "(another --norm, --upsample, --padding or size?)")
        layer.set_weights(values)


def add_styles_from(network, source) -> None:
    """Copies a multi-style ``source`` into ``network``, which has its styles first and then
    new ones: every shared weight, and each normalisation layer's gamma and beta rows of the
    source's styles; the new styles start from the mean of the source's (a style near all of
    them rather than none). Raises ``ConfigError`` (``init_from``) where the shapes differ."""
    n = networks.num_styles(source)
    _copy_layers(network, source, source.name, lambda values, layer: [
        np.concatenate([v, np.repeat(v.mean(axis=0, keepdims=True), layer.num_styles - n,
                                     axis=0)]) for v in values])


def widen_to_styles(network, source, spec: str) -> None:
    """Starts the multi-style ``network`` from the one-style ``source``: every convolution
    copied, and each instance normalisation's scale and shift copied into every style's row of
    the conditional one. Raises ``ConfigError`` (``init_from``) where the layers differ."""
    _copy_layers(network, source, spec, lambda values, layer: [
        np.repeat(v[None], layer.num_styles, axis=0) for v in values])


def narrow_to_style(network, source, spec: str, style: str) -> None:
    """Starts the one-style ``network`` from the multi-style ``source``'s style ``style``
    (``networks.bind_style``: every convolution, and that style's scale and shift at each
    normalisation layer), so it computes what ``source`` computes for ``style``. Raises
    ``ConfigError`` (``init_from``) for a style ``source`` lacks or layers that differ."""
    names = networks.style_names(source)
    if style not in names:
        raise config_lib.ConfigError(
            "init_from", f"{spec}: has no style {style!r} (it has {', '.join(names)}); name "
                         "the style image after one of them, or give all of its styles")
    if network.head != source.head:
        raise config_lib.ConfigError(
            "init_from", f"{spec}: has the {source.head} head; train with --head={source.head}")
    bound = networks.bind_style(source, networks.style_weights(names, style))
    theirs = bound.get_weights()
    if [tuple(w.shape) for w in theirs] != [tuple(w.shape) for w in network.weights]:
        raise config_lib.ConfigError(
            "init_from", f"{spec}: its weights do not fit this network (another --filters, "
                         "--head, --upsample or --padding?)")
    network.set_weights(theirs)


def widen_filters(network, source, spec: str) -> None:
    """Starts ``network`` from ``source``, a style network of the same shape but with fewer
    filters, keeping its function (Net2Net's aim, Chen et al. 2016, by zeros rather than
    copies): every weight of ``source`` goes into the first channels of the same weight; the
    new channels keep ``network``'s initial values, except that every convolution reads
    nothing from them (its kernel is zero there) and the residual blocks' second
    normalisations give them scale and shift 0, so they add nothing to the residual stream.
    Training then grows them from there. Raises ``ConfigError`` (``init_from``) where the
    layers differ otherwise."""
    ours = {layer.name: layer for layer in network.layers}
    weighted = [layer for layer in source.layers if layer.weights]
    if {layer.name for layer in weighted} != {n for n, layer in ours.items() if layer.weights}:
        raise config_lib.ConfigError(
            "init_from", f"{spec}: its layers do not fit this network (another number of "
                         "residual blocks, --norm, --upsample or --padding?)")
    for theirs in weighted:
        layer = ours.get(theirs.name)
        if layer is None or len(layer.weights) != len(theirs.weights):
            raise config_lib.ConfigError(
                "init_from", f"{spec}: its layer {theirs.name} does not fit this network "
                             "(another --norm, --upsample, --padding or size?)")
        values = []
        for new, old in zip(layer.get_weights(), theirs.get_weights()):
            if new.ndim != old.ndim or any(n < o for n, o in zip(new.shape, old.shape)) or (
                    new.ndim == 4 and new.shape[:2] != old.shape[:2]):
                raise config_lib.ConfigError(
                    "init_from", f"{spec}: its layer {theirs.name} does not fit this network "
                                 f"(weights {old.shape} into {new.shape})")
            if new.ndim == 4:  # a kernel: nothing read from the new input channels
                new[:, :, old.shape[2]:, :] = 0
            elif theirs.name.endswith("_conv2_norm"):  # the residual branch's last norm
                new[..., old.shape[-1]:] = 0
            new[tuple(slice(0, n) for n in old.shape)] = old
            values.append(new)
        layer.set_weights(values)


def init_network_from(network, spec: str, inherited_styles=(),
                      models_dir: str | None = None, style: str | None = None) -> None:
    """Copies the weights of the model ``spec`` (a ``.keras`` file, a SavedModel folder or a
    model name) into ``network``; raises ``ConfigError`` (``init_from``) unless every weight
    has the same shape. With ``inherited_styles`` (a network adding styles to ``spec``'s):
    ``add_styles_from``; a style network with more filters than ``spec``'s:
    ``widen_filters``."""
    source = load_init_network(spec, models_dir)
    if inherited_styles:
        add_styles_from(network, source)
        return
    if networks.num_styles(network) > 1 and networks.num_styles(source) == 1:
        widen_to_styles(network, source, spec)
        return
    if networks.num_styles(network) == 1 and networks.num_styles(source) > 1:
        if style is None:
            raise config_lib.ConfigError(
                "init_from", f"{spec}: has {networks.num_styles(source)} styles; say which "
                             "one this one-style network starts from")
        narrow_to_style(network, source, spec, style)
        return
    theirs = source.get_weights()
    ours = network.weights
    shapes = [tuple(w.shape) for w in theirs]
    if (isinstance(network, networks.StyleTransferNetwork)
            and isinstance(source, networks.StyleTransferNetwork)
            and network.filters != source.filters
            and all(n >= o for n, o in zip(network.filters, source.filters))
            and networks.num_styles(network) == networks.num_styles(source)):
        widen_filters(network, source, spec)
        return
    if shapes != [tuple(v.shape) for v in ours]:
        raise config_lib.ConfigError(
            "init_from", f"{spec}: its weights do not fit this network (another --scale, "
                         "--norm, --upsample or size?); start from a model of the same shape")
    network.set_weights(theirs)
