"""The loss network: a frozen VGG16 (``keras.applications``) that returns named activations.

Callers pass RGB pixels in [0, 255]; each weight source brings its own preprocessing
(``torchvision``: [0, 1] minus the ImageNet mean over its std; ``imagenet``: Caffe-style BGR
0-255 minus the mean). Layers are named in the paper's words, ``relu1_2`` ... ``relu5_3``, and the
network is cut after the deepest requested layer, so nothing is computed that no loss uses.
Backend-neutral: ``keras`` and ``keras.ops`` only.
"""

from __future__ import annotations

import keras
from keras import ops

from kperceptual import choices
from kperceptual.losses import vgg16_weights as weights_lib

LAYER_NAMES = choices.VGG16_LAYERS
STYLE_LAYERS = choices.STYLE_LAYERS
CONTENT_LAYERS = choices.CONTENT_LAYERS
check_layers = choices.check_layers

_TORCHVISION_MEAN = (0.485, 0.456, 0.406)
_TORCHVISION_STD = (0.229, 0.224, 0.225)
_CAFFE_BGR_MEAN = (103.939, 116.779, 123.68)


def preprocess(pixels, source: str):
    """RGB [0, 255] -> the input the weights of ``source`` were trained on."""
    pixels = ops.cast(pixels, "float32")
    if source == "torchvision":
        mean = ops.convert_to_tensor([255.0 * m for m in _TORCHVISION_MEAN])
        scale = ops.convert_to_tensor([1.0 / (255.0 * s) for s in _TORCHVISION_STD])
        return (pixels - mean) * scale
    if source == "imagenet":
        return pixels[..., ::-1] - ops.convert_to_tensor(_CAFFE_BGR_MEAN)
    raise ValueError(f"unknown VGG16 weight source {source!r}; expected one of "
                     f"{weights_lib.SOURCES}")


@keras.saving.register_keras_serializable(package="kperceptual")
class LossNetwork(keras.Model):
    """Frozen VGG16 feature extractor: ``pixels -> {layer name: activation}``.

    Args:
        layers: paper layer names to return, e.g. ``("relu2_2", "relu4_3")``.
        weights: weight source, ``"torchvision"`` or ``"imagenet"``, or ``None`` for random
            weights (tests of shapes only).
    """

    def __init__(self, layers=STYLE_LAYERS, weights="torchvision", **kwargs):
        super().__init__(**kwargs)
        layers = tuple(dict.fromkeys(layers))  # unique, in the caller's order
        check_layers(layers)
        if weights is not None and weights not in weights_lib.SOURCES:
            raise ValueError(f"unknown VGG16 weight source {weights!r}; expected one of "
                             f"{weights_lib.SOURCES}")
        self.layer_names = layers
        self.weight_source = weights
        vgg = keras.applications.VGG16(
            include_top=False,
            weights=None if weights is None else weights_lib.vgg16_weights(weights),
            input_shape=(None, None, 3),
        )
        vgg.trainable = False
        self._vgg = vgg
        self.features = self._cut(layers, "vgg16_features")
        self.trainable = False

    def _cut(self, layers, name):
        model = keras.Model(self._vgg.input,
                            [self._vgg.get_layer(LAYER_NAMES[n]).output for n in layers], name=name)
        model.trainable = False
        return model

    def _run(self, model, layers, pixels):
        outputs = model(preprocess(pixels, self.weight_source or "torchvision"))
        if not isinstance(outputs, (list, tuple)):
            outputs = [outputs]
        return dict(zip(layers, outputs))

    def call(self, pixels):
        return self._run(self.features, self.layer_names, pixels)

    def partial(self, layers):
        """A function returning only ``layers`` and computing nothing deeper; shares weights."""
        layers = tuple(dict.fromkeys(layers))
        missing = [n for n in layers if n not in self.layer_names]
        if missing:
            raise ValueError(f"loss network does not return {', '.join(missing)}")
        model = self._cut(layers, "vgg16_" + "_".join(layers))
        return lambda pixels: self._run(model, layers, pixels)

    def get_config(self):
        config = super().get_config()
        config.update(layers=list(self.layer_names), weights=self.weight_source)
        return config
