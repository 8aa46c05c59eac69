"""Applying a trained network: ``loading`` (models by name, path or file), ``inputs`` (expanding
the inputs a command is given), ``stylizer`` (``Stylizer``, ``stylize_image``: colour, strength,
style mixing, memory budget), ``memory`` (budgets), ``tiling`` (exact tiled application for
images larger than memory), ``video``.
"""


def __getattr__(name):  # Keras loads on first use, not when a submodule is imported
    if name in ("Stylizer", "stylize_image"):
        from kperceptual.inference import stylizer

        return getattr(stylizer, name)
    raise AttributeError(f"module 'kperceptual.inference' has no attribute {name!r}")
