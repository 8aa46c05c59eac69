"""``--loss_shift``: the objective scores a window of the output that moves from batch to batch
(style: so no band along the borders is learned; super-resolution: so VGG16's pooling grid
does not stay in step with the upsampling grid). The unit behaviour of the window is in
test_sr_training_options.py; here a two-style network trains with it (each example scored
against its own style through the window)."""

import keras
import numpy as np
import tensorflow as tf

from helpers import small_config
from kperceptual import config as config_lib
from kperceptual.imaging import images
from kperceptual.losses import objective as objectives
from kperceptual.training import trainer


def test_a_style_network_trains_on_a_moving_window(tmp_path, photos, vgg_weights_path):
    style_image = "skimage:hubble_deep_field,skimage:coffee"
    config = small_config(tmp_path, image_size=64, batch_size=4, learning_rate=1e-3,
                          style_image=style_image, loss_shift=16)
    config_lib.validate(config)
    assert "loss_shift" in config_lib.OBJECTIVE_FIELDS  # a resume may not change it
    keras.utils.set_random_seed(0)
    t = trainer.build_trainer(config, tf.distribute.MirroredStrategy(["/cpu:0"]))
    assert isinstance(t.objective, objectives.WithLossShift) and t.objective.shift == 16
    batch = np.stack([images.resize_and_center_crop(photos[k], 64)
                      for k in ("astronaut", "chelsea", "coffee", "astronaut")])
    inputs = {"pixels": batch, "style": np.array([0, 1, 0, 1], np.int32)}
    history = t.fit(tf.data.Dataset.from_tensors(inputs).repeat(), steps_per_epoch=3,
                    epochs=1, shuffle=False, verbose=0).history
    assert np.isfinite(history["loss"]).all() and history["style_loss"][-1] > 0
    # The network still makes outputs the size of its inputs; only the loss sees less.
    assert keras.ops.convert_to_numpy(t(inputs)).shape == (4, 64, 64, 3)
