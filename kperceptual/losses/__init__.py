"""The loss network and the perceptual losses of Johnson et al. (2016).

* ``loss_network``: the frozen VGG16 (``keras.applications``) returning named activations;
* ``vgg16_weights``: its weights, fetched, verified and cached (``python -m kperceptual.weights``);
* ``perceptual``: feature reconstruction, Gram matrix, style reconstruction, total variation,
  pixel, chroma and stability losses;
* ``objective``: the weighted objectives (``objective_from_config``);
* ``config``: the objective's configuration (``ObjectiveConfig``) and its checks.

Backend-neutral: ``keras.ops`` only.
"""
