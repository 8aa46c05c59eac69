"""TF Serving's model layout, read without TensorFlow: ``<models_dir>/<name>/<version>/``.

A version folder holds a SavedModel and, under ``assets/``, the Keras network it was exported
from (``NETWORK_ASSET``), which is what every backend loads. ``tf_saved_model`` writes this
layout; ``kperceptual.inference.loading`` reads it.
"""

from __future__ import annotations

import os
import re

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


# A model's name is a folder of the layout, a TF Serving model name and part of output file
# names: one rule for training's --name and export's --name.
SAFE_NAME = re.compile(r"[A-Za-z0-9_.-]+")


def name_problem(name: str) -> str | None:
    """Why ``name`` cannot name a model, or None if it can."""
    if not SAFE_NAME.fullmatch(name) or name.startswith("."):
        return (f"{name!r} is not a safe model name (letters, digits, _ . - only, not starting "
                "with .)")
    return None


def user_models_dir() -> str:
    """Where the user's own models go (what ``train`` and ``export`` write) and where a model
    name is looked up first, apart from the models this project ships: ``$KPERCEPTUAL_MODELS``,
    else ``$KERAS_HOME/kperceptual/models`` (``KERAS_HOME`` is ``~/.keras`` unless set)."""
    if os.environ.get("KPERCEPTUAL_MODELS"):
        return os.environ["KPERCEPTUAL_MODELS"]
    keras_home = os.environ.get("KERAS_HOME") or os.path.join(os.path.expanduser("~"), ".keras")
    return os.path.join(keras_home, "kperceptual", "models")
