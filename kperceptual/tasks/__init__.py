"""The paper's two tasks, one file each: its training config and checks, its transformation
network, its data source, its objective and the samples shown while it trains.

* ``style_transfer``: Section 3 (one style image, or several in one network);
* ``super_resolution``: Section 4.2 (x4, x8; l_feat or l_pixel).

``kperceptual.training`` trains either through the same interface (``TrainingConfig``'s
``make_network``, ``make_source``, ``make_objective``, ``trainer_options``, ``sample_inputs``).
"""
