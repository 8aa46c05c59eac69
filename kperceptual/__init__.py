"""kperceptual: perceptual losses for real-time style transfer and super-resolution (Keras 3).

Backend-neutral modules: ``images``, ``weights``, ``loss_network``, ``losses``, ``networks``,
``config``. TensorFlow-only modules: ``data`` (tf.data), ``trainer`` (distributed training step),
``export`` (SavedModel).
"""

__version__ = "0.1.0"
