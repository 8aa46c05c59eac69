"""The optimisation method of Gatys, Ecker and Bethge (CVPR 2016), which the paper measures its
networks against: ``optimizer`` (L-BFGS or Adam on the pixels, ``python -m kperceptual.optimize``)
and ``autodiff`` (gradients on whichever Keras backend runs).
"""


def __getattr__(name):  # the optimiser (and Keras) load on first use, not with the config
    if name in ("GatysResult", "PixelObjective", "stylize"):
        from kperceptual.gatys import optimizer

        return getattr(optimizer, name)
    raise AttributeError(f"module 'kperceptual.gatys' has no attribute {name!r}")
