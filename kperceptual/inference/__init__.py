"""Applying a trained network: ``loading`` (models by name, path or file), ``inputs`` (expanding
the inputs a command is given), ``stylizer`` (``Stylizer``, ``stylize_image``: colour, strength,
style mixing, memory budget), ``memory`` (budgets), ``tiling`` (exact tiled application for
images larger than memory), ``video``.
"""

from kperceptual.inference.stylizer import Stylizer, stylize_image  # noqa: F401
