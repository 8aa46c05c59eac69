"""Training checkpoints: the network's, the optimizer's and the moving average's variables in
one ``ckpt-<step>.npz`` per save (written atomically, the newest ``keep`` kept), listing,
restoring (a damaged or non-finite checkpoint is refused with one line), and the weights a run
exports (the moving average where there is one). Backend-neutral.
"""

from __future__ import annotations

import glob
import os
import re

import keras
import numpy as np
from absl import logging

from kperceptual import config as config_lib
from kperceptual.imaging import files
from kperceptual import networks
from kperceptual.errors import InputError

# Network settings that runs before them did not record, as those runs had them.


_CKPT = re.compile(r"ckpt-(\d+)\.npz$")


def _variables(trainer):
    return list(trainer.network.weights), list(trainer.optimizer.variables)


class CheckpointError(InputError):
    """A checkpoint file is damaged (truncated, not an npz) or holds NaN or infinite values."""


def _finite(arrays) -> bool:
    return all(np.isfinite(a).all() for a in arrays.values()
               if np.issubdtype(a.dtype, np.inexact))


def save_checkpoint(trainer, directory: str, step: int, keep: int = 2) -> str | None:
    """Writes network and optimizer state atomically as ``ckpt-<step>.npz``; keeps the last few.
    State holding NaN or infinite values is not written (nothing is removed): returns None."""
    net_vars, opt_vars = _variables(trainer)
    arrays = {f"net_{i}": keras.ops.convert_to_numpy(v.value) for i, v in enumerate(net_vars)}
    arrays.update({f"opt_{i}": keras.ops.convert_to_numpy(v.value)
                   for i, v in enumerate(opt_vars)})
    if not _finite(arrays):
        return None
    path = os.path.join(directory, f"ckpt-{step:08d}.npz")
    with files.atomic_path(path) as tmp:
        np.savez(tmp, **arrays)
    for old in sorted(list_checkpoints(directory))[:-keep]:
        os.remove(old[1])
    return path


def list_checkpoints(directory: str) -> list[tuple[int, str]]:
    """Complete checkpoints in ``directory`` as sorted (step, path) pairs."""
    found = []
    for path in glob.glob(os.path.join(directory, "ckpt-*.npz")):
        match = _CKPT.fullmatch(os.path.basename(path))
        if match:
            found.append((int(match.group(1)), path))
    return sorted(found)


def read_checkpoint(path: str) -> dict:
    """A checkpoint's arrays by name; raises ``CheckpointError`` (one line naming ``path``) for
    a damaged file or one holding NaN or infinite values."""
    import zipfile

    try:
        with np.load(path, allow_pickle=False) as f:
            arrays = {k: f[k] for k in f.files}
    except (zipfile.BadZipFile, OSError, ValueError, KeyError, EOFError) as e:
        reason = str(e).splitlines()[0] if str(e) else type(e).__name__
        raise CheckpointError(f"{path}: damaged checkpoint ({reason})") from e
    if not _finite(arrays):
        raise CheckpointError(f"{path}: holds NaN or infinite values")
    return arrays


def restore_checkpoint(trainer, path: str) -> int:
    """Loads a checkpoint into the trainer (optimizer built first); returns its step (the
    training batches behind it; ``mixed_float16`` skips the optimizer's update on overflow, so
    the optimizer may count fewer). Raises ``CheckpointError`` for a damaged one (nothing is
    assigned then)."""
    trainer.optimizer.build(trainer.network.trainable_variables)
    net_vars, opt_vars = _variables(trainer)
    f = read_checkpoint(path)
    if len([k for k in f if k.startswith("net_")]) != len(net_vars) or \
            len([k for k in f if k.startswith("opt_")]) != len(opt_vars):
        raise config_lib.ConfigError(
            "model_dir", f"{path}: does not match this network or optimizer (another "
                         "--precision? mixed_float16 adds loss-scale state); use another "
                         "--model_dir or the run's own settings")
    for i, v in enumerate(net_vars):
        v.assign(f[f"net_{i}"])
    for i, v in enumerate(opt_vars):
        v.assign(f[f"opt_{i}"])
    return int(_CKPT.fullmatch(os.path.basename(path)).group(1))


def restore_newest_checkpoint(trainer, directory: str) -> tuple[int, str | None]:
    """Restores the newest readable checkpoint in ``directory``, logging one line for each newer
    damaged one it passes over (which is kept); returns (step, path), (0, None) when there is
    none. Raises ``ConfigError`` when checkpoints exist and none of them can be read."""
    found = list_checkpoints(directory)
    for step, path in reversed(found):
        try:
            return restore_checkpoint(trainer, path), path
        except CheckpointError as e:
            logging.warning("skipping %s; trying an older checkpoint", e)
    if found:
        raise config_lib.ConfigError(
            "model_dir", f"{directory}: no readable checkpoint ({len(found)} damaged); move "
                         "them away to start again, or use another --model_dir")
    return 0, None


def last_good_checkpoint(directory: str) -> str | None:
    """The newest checkpoint in ``directory`` that reads and holds only finite values."""
    for _, path in reversed(list_checkpoints(directory)):
        try:
            read_checkpoint(path)
            return path
        except CheckpointError:
            pass
    return None


def ema_weights(trainer) -> list:
    """The network's weights (``get_weights`` order), with each trainable variable replaced by
    its exponential moving average where the optimizer keeps one."""
    optimizer = trainer.optimizer
    averages = getattr(optimizer, "_model_variables_moving_average", None)
    values = trainer.network.get_weights()
    if not getattr(optimizer, "use_ema", False) or not averages:
        return values
    trainable = {id(v): v for v in trainer.network.trainable_variables}
    # A network adding styles: the rows of the styles it does not train keep their values
    # (their gradients are exactly zero, but an average of a constant need not be it exactly,
    # and Keras writes the averages into the variables at the end of ``fit``).
    kept = _untrained_style_rows(trainer)
    untrained = getattr(trainer, "untrained_values", {})
    for i, variable in enumerate(trainer.network.weights):
        if id(variable) in trainable:
            average = keras.ops.convert_to_numpy(averages[optimizer._get_variable_index(variable)])
            if kept is not None and average.ndim == 2:
                average[kept] = untrained.get(i, values[i][kept])
            values[i] = average
    return values


def keep_untrained_values(trainer) -> None:
    """Records the values of the style rows this run does not train (a network adding
    styles), as they are now (after initialising or restoring), for ``ema_weights``."""
    kept = _untrained_style_rows(trainer)
    if kept is None:
        return
    trainable = {id(v) for v in trainer.network.trainable_variables}
    trainer.untrained_values = {
        i: keras.ops.convert_to_numpy(v)[kept] for i, v in enumerate(trainer.network.weights)
        if id(v) in trainable and len(v.shape) == 2}


def _untrained_style_rows(trainer):
    """Indices of the styles a multi-style network has but this run does not train, or None."""
    n = networks.num_styles(trainer.network)
    trained = getattr(trainer, "trained_styles", ())
    if n == 1 or not trained or len(trained) == n:
        return None
    return np.array([i for i in range(n) if i not in trained], np.int64)
