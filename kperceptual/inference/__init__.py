"""Applying a trained network: ``loading`` (models by name, path, file or hub handle),
``inputs`` (expanding the inputs a command is given), ``stylizer`` (``Stylizer``,
``stylize_image``: colour, strength, style mixing, the memory budget), ``tiling`` and
``layerwise`` (exact application to images larger than memory: window by window, or layer by
layer at about one pass's arithmetic), ``video`` (threaded, batched, with its sound).
"""


def __getattr__(name):  # Keras loads on first use, not when a submodule is imported
    if name in ("Stylizer", "stylize_image"):
        from kperceptual.inference import stylizer

        return getattr(stylizer, name)
    raise AttributeError(f"module 'kperceptual.inference' has no attribute {name!r}")
