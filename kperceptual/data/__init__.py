"""Training data: sources of photos (a folder, ``skimage``, ``tfds:NAME``), the super-resolution
degradation, and the loaders that feed them to training.

* ``sources``: ``TrainingImages``, ``SuperResolutionPairs``, ``MultiStyleImages`` and the
  ``keras.utils.PyDataset`` loader (every backend);
* ``degradation``: the paper's low-resolution input (blur, bicubic downsampling);
* ``tf_pipeline``: the tf.data loader (TensorFlow-only).
"""
