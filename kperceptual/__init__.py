"""kperceptual: perceptual losses for real-time style transfer and super-resolution (Keras 3).

Backend-neutral modules: ``images``, ``weights``, ``loss_network``, ``losses``, ``networks``,
``config``, ``data`` (training images; ``keras.utils.PyDataset``), ``trainer`` and
``distribute`` (training on any backend). TensorFlow-only modules: ``tf_pipeline`` (tf.data),
``tf_training`` (the tf.distribute training step), ``export`` (SavedModel, TFLite).
"""

__version__ = "0.1.0"
