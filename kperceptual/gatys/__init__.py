"""The optimisation method of Gatys, Ecker and Bethge (CVPR 2016), which the paper measures its
networks against: ``optimizer`` (L-BFGS or Adam on the pixels, ``python -m kperceptual.optimize``)
and ``autodiff`` (gradients on whichever Keras backend runs).
"""

from kperceptual.gatys.optimizer import GatysResult, PixelObjective, stylize  # noqa: F401
