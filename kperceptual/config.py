"""Every command's configuration, in one import (``from kperceptual import config``).

Each is defined where its part of the paper lives; this module only gathers them for users and
the commands. Importable without Keras or TensorFlow, so flags are checked before any framework
starts; each ``validate*`` raises ``errors.FlagError`` naming the flag and what is wrong.

* ``ObjectiveConfig`` (``kperceptual.losses.config``): the perceptual objective's weights and
  layers, shared by training and the Gatys optimiser;
* ``TrainingConfig``, ``validate`` (``kperceptual.training.config``): what every training run has;
* ``StyleTrainingConfig`` (``kperceptual.tasks.style_transfer``) and ``SuperResolutionConfig``
  (``kperceptual.tasks.super_resolution``): the paper's two tasks;
* ``GatysConfig``, ``validate_gatys`` (``kperceptual.gatys.config``): the optimisation baseline.
"""

from kperceptual.errors import FlagError as ConfigError  # noqa: F401  (the name it had)
from kperceptual.gatys.config import (GatysConfig, check_gatys_memory,  # noqa: F401
                                      check_gatys_sizes, validate_gatys)
from kperceptual.losses.config import ObjectiveConfig, validate_objective  # noqa: F401
from kperceptual.tasks.style_transfer import (MAX_STYLES, PAPER_FILTERS,  # noqa: F401
                                             StyleTrainingConfig)
from kperceptual.tasks.super_resolution import SuperResolutionConfig  # noqa: F401
from kperceptual.training.config import OBJECTIVE_FIELDS, TrainingConfig, validate  # noqa: F401
