"""kperceptual: perceptual losses for real-time style transfer and super-resolution (Keras 3).

``kperceptual.load(NAME_OR_PATH)`` loads a trained model as every command does (a shipped or
your own model's name, a path, a ``.keras`` file, a hub handle such as ``hf://OWNER/REPO``).
The README's Layout section shows where each part of the paper lives.
"""

__version__ = "0.1.0"


def load(spec: str, models_dir: str | None = None):
    """The model ``spec`` names, loaded as the commands load it: a
    ``kperceptual.inference.loading.LoadedModel`` whose ``network`` is the Keras model and whose
    ``fn`` maps float32 pixels (B, H, W, 3) in [0, 255] to the output pixels."""
    from kperceptual.inference.loading import load_model

    return load_model(spec, models_dir)
