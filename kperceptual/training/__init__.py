"""Training a transformation network, on any Keras backend.

* ``trainer``: ``PerceptualTrainer`` (the paper's objective in ``compute_loss``), ``train(config)``;
* ``checkpoints``: saving, listing and restoring checkpoints; the weights' moving average;
* ``monitor``: logs, summaries, the NaN guard;
* ``init_from``: starting from another model's weights, adding styles;
* ``schedules``: learning-rate schedules;
* ``distribute``: where training runs on each backend;
* ``tf_step``: the tf.distribute training step (TensorFlow-only).
"""
