"""The optimisation-based style transfer of Gatys, Ecker and Bethge (CVPR 2016), the baseline the
paper measures its networks against: minimise the perceptual objective over an image's pixels.

The objective is ``objectives.PerceptualObjective``, built by ``objectives.objective_from_config`` exactly
as training builds it, so "the objective value" means the same thing for a network's output and
for an optimised image. Three optimisers (``MINIMIZERS``):

* ``lbfgs``: L-BFGS-B (scipy) with every pixel bounded to [0, 255] and a line search; what the
  benchmarks' bar is measured against.
* ``lbfgs_clipped``: the paper's baseline as it describes it, L-BFGS projected by clipping the
  image to [0, 255] after each iteration, with the update rule of Torch's ``optim.lbfgs`` (the
  paper's code was Torch, and jcjohnson's neural-style calls it without a line search): unit
  steps, one evaluation per iteration.
* ``adam``: Adam (``keras.optimizers.Adam``) on the pixels, projected back to [0, 255] after each
  step.

Python use::

    from kperceptual.gatys import optimizer as gatys
    result = gatys.stylize("photo.jpg", "starry_night.jpg", iterations=300, image_size=512)
    result.image        # uint8 (H, W, 3)
    result.history      # one dict per iteration: content, style, tv, total, seconds

Backend-neutral: gradients come from ``autodiff.value_and_grad``.
"""

from __future__ import annotations

import dataclasses
import time

import keras
import numpy as np

from kperceptual.gatys import autodiff
from kperceptual.imaging import color
from kperceptual.imaging import images
from kperceptual.losses import objective as objectives
from kperceptual import choices
from kperceptual.errors import FlagError as ConfigError
from kperceptual.gatys.config import (GatysConfig, check_gatys_memory, check_gatys_sizes,
                                      check_init, fit_init_image)
from kperceptual.losses.config import ObjectiveConfig, validate_objective
from kperceptual.networks.precision import dtype_policy, resolve_precision

TERMS = ("content", "style", "tv", "total")


@dataclasses.dataclass
class GatysResult:
    image: np.ndarray  # uint8 (H, W, 3), the output as it is written
    history: list  # per iteration (0 = the initial image): iteration, seconds, content, style, tv, total
    evaluations: int  # objective + gradient evaluations; L-BFGS's line search may need more than one
    stopped: str  # why the optimiser stopped
    style_shape: tuple = ()  # (H, W) of the style image the objective was built from

    @property
    def objective(self) -> float:
        """The total objective of the last iteration (before colour preservation)."""
        return self.history[-1]["total"]


class PixelObjective:
    """The objective of one content image and one style image as a function of output pixels.

    Args:
        content, style: RGB images (H, W, 3) in [0, 255], already at the sizes to use.
        config: a ``config.ObjectiveConfig`` (weights, layers, loss-network weights).
        loss_net: a ``LossNetwork`` returning ``config.loss_layers()``, to share one between runs.
    """

    def __init__(self, content, style, config: ObjectiveConfig | None = None, loss_net=None):
        self.config = config or ObjectiveConfig()
        self.shape = tuple(np.shape(content))
        self.objective = objectives.objective_from_config(
            self.config, np.asarray(style, np.float32), loss_net)
        self.content_targets = self.objective.content_targets(
            np.asarray(content, np.float32)[None])
        self._step = autodiff.value_and_grad(
            lambda pixels: self.objective(pixels, self.content_targets))

    def value_and_grad(self, image):
        """``({term: float}, gradient float32 (H, W, 3))`` at ``image`` (H, W, 3)."""
        image = np.asarray(image, np.float32).reshape((1,) + self.shape)
        values, gradient = self._step(image)
        return _floats(values), keras.ops.convert_to_numpy(gradient)[0]

    def __call__(self, image) -> dict:
        """``{term: float}`` at ``image`` (H, W, 3); e.g. a network's output."""
        image = np.asarray(image, np.float32).reshape((1,) + self.shape)
        return _floats(self.objective(keras.ops.convert_to_tensor(image), self.content_targets))


def _floats(values) -> dict:
    """{term: float} of one image's per-example loss terms."""
    return {name: float(keras.ops.convert_to_numpy(values[name])[0]) for name in TERMS}


def initial_image(content, init: str = "noise", seed: int = 0, image=None) -> np.ndarray:
    """The starting point: white noise, uniform in [0, 255] (the paper), the content image, or
    ``image`` (``init="image"``: e.g. a style network's output, to refine it), which must
    have the content's shape."""
    content = np.asarray(content)
    if init == "noise":
        return np.random.default_rng(seed).uniform(0.0, 255.0, content.shape).astype(np.float32)
    if init == "content":
        return content.astype(np.float32)
    if init == "image":
        if image is None or np.shape(image) != content.shape:
            raise ValueError(f"init='image' needs an image of the content's shape "
                             f"{content.shape}, got {None if image is None else np.shape(image)}")
        return np.clip(np.asarray(image, np.float32), 0.0, 255.0)
    raise ValueError(f"unknown init {init!r}; expected one of {', '.join(choices.GATYS_INITS)}")


class _History:
    """Records the loss terms per iteration and calls the user's callback; ``seconds`` count
    from the optimiser's start, so they include every evaluation it made."""

    def __init__(self, callback):
        self.rows = []
        self.callback = callback
        self.started = time.perf_counter()

    def add(self, iteration, terms, image):
        self.rows.append({"iteration": iteration,
                          "seconds": time.perf_counter() - self.started, **terms})
        if self.callback is not None:
            self.callback(iteration, terms, image)


def minimize_lbfgs(objective: PixelObjective, init, iterations: int, memory: int = 20,
                   callback=None):
    """Runs ``iterations`` L-BFGS-B iterations with pixels bounded to [0, 255].

    ``callback(iteration, terms, image)`` is called for the initial image (iteration 0) and after
    every iteration. Returns ``(image float32, history, evaluations, stopped)``.
    """
    from scipy import optimize

    history = _History(callback)
    last = {}

    def fun(x):
        terms, gradient = objective.value_and_grad(x)
        last.update(x=x.copy(), terms=terms)
        if not history.rows:  # L-BFGS-B scores the initial image first
            history.add(0, terms, x.reshape(objective.shape))
        return terms["total"], gradient.astype(np.float64).ravel()

    def on_iteration(intermediate_result):
        x = intermediate_result.x
        terms = last["terms"] if np.array_equal(x, last["x"]) else objective(x)
        history.add(len(history.rows), terms, x.reshape(objective.shape))

    x = np.clip(np.asarray(init, np.float64), 0.0, 255.0).ravel()
    evaluations, restarts = 0, 0
    while True:
        done = max(len(history.rows) - 1, 0)
        best = min((row["total"] for row in history.rows), default=np.inf)
        # ftol = gtol = 0: run the iterations asked for, as the paper does.
        result = optimize.minimize(
            fun, x, jac=True, method="L-BFGS-B", bounds=optimize.Bounds(0.0, 255.0),
            callback=on_iteration,
            options={"maxiter": iterations - done, "maxfun": 10 * (iterations - done) + 20,
                     "maxcor": memory, "ftol": 0.0, "gtol": 0.0})
        x, evaluations = result.x, evaluations + int(result.nfev)
        improved = min(row["total"] for row in history.rows) < best
        if len(history.rows) - 1 >= iterations or not improved or restarts >= 10:
            break
        # L-BFGS-B stops early when a noisy objective (a bfloat16 loss network) fails to go
        # down along a search line: start it again from here with an empty memory, as long as
        # that lowers the objective.
        restarts += 1
    stopped = str(result.message) + (f" ({restarts} restarts)" if restarts else "")
    image = np.clip(x, 0.0, 255.0).reshape(objective.shape).astype(np.float32)
    return image, history.rows, evaluations, stopped


def minimize_lbfgs_clipped(objective: PixelObjective, init, iterations: int, memory: int = 100,
                           callback=None):
    """Runs ``iterations`` L-BFGS iterations, clipping the image to [0, 255] after each: the
    paper's "projected L-BFGS", with the rule of Torch's ``optim.lbfgs`` (no line search; a
    first step of ``min(1, 1 / |g|_1)`` along ``-g``, then unit steps along the two-loop
    direction scaled by ``s.y / y.y``; ``memory`` pairs, Torch's default 100; a pair is kept
    when ``y.s > 1e-10``). Each pair is made from the step taken after clipping, ``s`` the
    change of the image and ``y`` of the gradient (pairs of the unclipped step, as Torch would
    record them, stall at the bounds). One evaluation of the objective per iteration.

    Same callback and return value as ``minimize_lbfgs``.
    """
    if memory < 1:
        raise ValueError(f"memory={memory}: L-BFGS needs at least 1 pair")
    history = _History(callback)
    x = np.clip(np.asarray(init, np.float64), 0.0, 255.0).ravel()
    terms, gradient = objective.value_and_grad(x)
    history.add(0, terms, x.reshape(objective.shape))
    g = gradient.astype(np.float64).ravel()
    pairs = []  # (s, y, 1 / y.s), oldest first
    h_diag, step, g_old, x_old = 1.0, 0.0, None, None
    for iteration in range(1, iterations + 1):
        if g_old is None:
            direction = -g
            step = min(1.0, 1.0 / max(float(np.abs(g).sum()), 1e-30))
        else:
            y, s = g - g_old, x - x_old
            ys = float(y @ s)
            if ys > 1e-10:
                pairs = (pairs + [(s, y, 1.0 / ys)])[-memory:]
                h_diag = ys / float(y @ y)
            q, alphas = -g, []
            for s_i, y_i, rho in reversed(pairs):
                alphas.append(rho * float(s_i @ q))
                q = q - alphas[-1] * y_i
            direction = q * h_diag
            for (s_i, y_i, rho), alpha in zip(pairs, reversed(alphas)):
                direction = direction + s_i * (alpha - rho * float(y_i @ direction))
            step = 1.0
        # Not a descent direction: nothing left to gain (optim.lbfgs's test with its default
        # tolX; neural-style passes tolX=-1, which only matters once the gradient vanishes).
        if float(g @ direction) > -1e-9:
            return (x.reshape(objective.shape).astype(np.float32), history.rows, iteration,
                    f"no descent direction at iteration {iteration}")
        g_old, x_old = g, x
        x = np.clip(x + step * direction, 0.0, 255.0)
        terms, gradient = objective.value_and_grad(x)
        g = gradient.astype(np.float64).ravel()
        history.add(iteration, terms, x.reshape(objective.shape))
    return (x.reshape(objective.shape).astype(np.float32), history.rows, iterations + 1,
            "done")


def minimize_adam(objective: PixelObjective, init, iterations: int, learning_rate: float = 10.0,
                  callback=None):
    """Runs ``iterations`` Adam steps on the pixels, clipping them to [0, 255] after each.

    Same callback and return value as ``minimize_lbfgs``.
    """
    history = _History(callback)
    pixels = keras.Variable(np.clip(np.asarray(init, np.float32), 0.0, 255.0), name="pixels")
    optimizer = keras.optimizers.Adam(learning_rate)
    optimizer.build([pixels])
    for iteration in range(iterations + 1):
        current = keras.ops.convert_to_numpy(pixels.value)
        terms, gradient = objective.value_and_grad(current)
        history.add(iteration, terms, current)
        if iteration < iterations:
            optimizer.apply([keras.ops.convert_to_tensor(gradient)], [pixels])
            pixels.assign(keras.ops.clip(pixels.value, 0.0, 255.0))
    image = keras.ops.convert_to_numpy(pixels.value).astype(np.float32)
    return image, history.rows, iterations + 1, "done"


MINIMIZERS = {"lbfgs": minimize_lbfgs, "lbfgs_clipped": minimize_lbfgs_clipped,
              "adam": minimize_adam}  # each (objective, init, iterations, setting, callback)
assert tuple(MINIMIZERS) == choices.GATYS_OPTIMIZERS

_D = {name: f.default for name, f in GatysConfig.__dataclass_fields__.items()}


def stylize(content, style, *, iterations: int = _D["iterations"],
            optimizer: str = _D["optimizer"], init: str = _D["init"], seed: int = _D["seed"],
            image_size: int = 0, style_size: int = _D["style_size"],
            learning_rate: float = _D["learning_rate"], lbfgs_memory: int = _D["lbfgs_memory"],
            preserve_color: bool = _D["preserve_color"], precision: str = _D["precision"],
            init_image=None, objective: ObjectiveConfig | None = None, loss_net=None,
            callback=None, **objective_settings) -> GatysResult:
    """Stylises ``content`` with ``style`` by optimisation (Gatys et al.).

    Args:
        content, style: RGB images (H, W, 3) uint8 or float in [0, 255], or image paths
            (``images.read_image``).
        iterations: optimiser iterations (the paper: 100 to 500).
        optimizer: ``"lbfgs"`` (bounded L-BFGS-B), ``"lbfgs_clipped"`` (the paper's
            projected L-BFGS) or ``"adam"``.
        init: ``"noise"`` (white noise, the paper), ``"content"`` or ``"image"``: start from
            ``init_image`` (an RGB image or its path), e.g. a style network's output, so the
            iterations refine it. It is resized to the content's size if its aspect ratio is
            within 2% of the content's; otherwise a ``FlagError`` (a ``ValueError``).
        image_size, style_size: resize the longer sides to these (0: content as given; style to
            the content's longer side). Unlike ``optimize`` (512), the content is taken at the
            size given unless ``image_size`` says otherwise; the other defaults are
            ``optimize``'s.
        preserve_color: transfer luminance only and keep the content's colours: both images
            are optimised as grey images (the style's luminance matched to the content's mean
            and spread), then the result's luminance is joined to the content's chroma.
        objective: the objective's settings; or give them as keywords
            (``style_weight=1e4``, ``style_layers=(...)``), the defaults of training otherwise.
        precision: ``"auto"`` (``mixed_bfloat16`` where the hardware computes it natively, as
            for training, but ``float32`` with ``init="image"``), ``"float32"`` or
            ``"mixed_bfloat16"``: the loss network's compute dtype. Pixels, gradients and the
            objective's sums stay float32.
        callback: ``callback(iteration, terms, image)`` after each iteration, e.g. progress.

    Returns a ``GatysResult`` (uint8 image, loss history per iteration).
    """
    if objective is None:
        objective = ObjectiveConfig(**objective_settings)
    elif objective_settings:
        objective = dataclasses.replace(objective, **objective_settings)
    content, style = (images.read_image(x) if isinstance(x, str) else np.asarray(x)
                      for x in (content, style))
    validate_objective(objective)
    check_init(init, init_image)
    if optimizer not in choices.GATYS_OPTIMIZERS:
        raise ConfigError("optimizer", f"unknown value {optimizer!r}; expected one of "
                                       f"{', '.join(choices.GATYS_OPTIMIZERS)}")
    content, style = images.size_content_and_style(images.to_uint8(content),
                                                   images.to_uint8(style), image_size, style_size)
    check_gatys_memory(*content.shape[:2], optimizer, lbfgs_memory)
    check_gatys_sizes(content, style, objective.loss_layers())
    if preserve_color:
        content_in, style_in = color.grey(content), color.match_luminance(style, content)
    else:
        content_in, style_in = content, style
    # Near a good image (a network's output) the bfloat16 objective is too coarse for L-BFGS:
    # from starry_night's output it made no progress in 34 iterations (docs/gatys.md).
    compute = ("float32" if precision == "auto" and init == "image"
               else resolve_precision(precision))
    with dtype_policy(compute):
        pixel_objective = PixelObjective(content_in, style_in, objective, loss_net)
    start_image = None
    if init == "image":
        fitted = fit_init_image(images.read_image(init_image) if isinstance(init_image, str)
                                else init_image, content)
        start_image = color.grey(fitted) if preserve_color else fitted
    start = initial_image(content_in, init, seed, start_image)
    if preserve_color and callback is not None:
        user_callback = callback

        def callback(iteration, terms, image):
            user_callback(iteration, terms, color.preserve_color(content, image))
    setting = learning_rate if optimizer == "adam" else lbfgs_memory
    image, history, evaluations, stopped = MINIMIZERS[optimizer](
        pixel_objective, start, iterations, setting, callback)
    if preserve_color:
        image = color.preserve_color(content, image)
    return GatysResult(images.to_uint8(image), history, evaluations, stopped,
                       tuple(style.shape[:2]))
