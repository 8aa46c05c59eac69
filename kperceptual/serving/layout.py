"""TF Serving's model layout, read without TensorFlow: ``<models_dir>/<name>/<version>/``.

A version folder holds a SavedModel and, under ``assets/``, the Keras network it was exported
from (``NETWORK_ASSET``), which is what every backend loads. ``tf_saved_model`` writes this
layout; ``kperceptual.inference.loading`` reads it.
"""

from __future__ import annotations

import os

NETWORK_ASSET = os.path.join("assets", "network.keras")

def versions(model_dir: str) -> list[int]:
    """Existing integer versions under ``EXPORT_DIR/<name>``."""
    if not os.path.isdir(model_dir):
        return []
    return sorted(int(d) for d in os.listdir(model_dir)
                  if d.isdigit() and os.path.isdir(os.path.join(model_dir, d)))


def latest_version_path(export_dir: str, name: str) -> str | None:
    """``export_dir/name/<highest version>`` or None."""
    found = versions(os.path.join(export_dir, name))
    return os.path.join(export_dir, name, str(found[-1])) if found else None


# Per image: 2048 x 2048 (about 4 GB of activations on a CPU for the default style network).
DEFAULT_MAX_PIXELS = 2048 * 2048
