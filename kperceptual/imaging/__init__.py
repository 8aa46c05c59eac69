"""Images in and out, for every command: reading, decoding and writing RGB images (``images``),
colour spaces for colour preservation (``color``), and atomic file writes (``files``: a reader
never sees half a file). No Keras, no TensorFlow.
"""
