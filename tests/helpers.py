"""Helpers the tests share (plain functions and constants; the fixtures are in conftest.py).

``../shared`` (data beside the repository, see its README) holds the SR benchmark sets, style
images and training photos some tests read: ``needs_shared`` skips those tests with the reason
when it is absent (a contributor without it), while ``.ci/run`` refuses to start without it, so
CI never skips them.
"""

import os

import numpy as np
import pytest

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
SHARED_DATA = os.path.join(os.path.dirname(REPO), "shared", "data")


def needs_shared(*parts):
    """A skip marker for a test that reads ``../shared/data/<parts>``, naming what is missing."""
    path = os.path.join(SHARED_DATA, *parts)
    return pytest.mark.skipif(not os.path.exists(path),
                              reason=f"needs {os.path.relpath(path, REPO)} (../shared beside the "
                                     "repository; .ci/run has it)")


# Python that makes this process behave as on a machine without TensorFlow: importing it fails
# as a missing package does (and nothing is left in sys.modules to say it was tried).
BLOCK_TENSORFLOW = """
import importlib.abc, importlib.machinery, sys
class _NoTensorFlow(importlib.abc.MetaPathFinder, importlib.abc.Loader):
    def find_spec(self, name, path=None, target=None):
        if name.partition(".")[0] in ("tensorflow", "tensorflow_datasets"):
            return importlib.machinery.ModuleSpec(name, self)
    def create_module(self, spec):
        raise ModuleNotFoundError(f"No module named {spec.name!r}", name=spec.name)
    def exec_module(self, module):
        pass
sys.meta_path.insert(0, _NoTensorFlow())
"""


# Plain SGD's steps are linear in the gradient, which is about 1e6 for these tiny runs (style
# weight 1e5): 1e-6 moves the weights by about 0.1, where the linear output head stays well
# behaved (at 1e-2 they reach 1e7 in three steps and float rounding is all that is compared).
SGD_LEARNING_RATE = 1e-6
# Runs that split a batch differently sum its float32 gradients (large, with cancellation) in
# another order: measured, a weight's move then differs by up to 3% of the largest move (tanh
# or linear head alike). A split that lost or double-counted an example is off by about 50%.
SUM_ORDER_TOLERANCE = 5e-2


def assert_same_sum(actual, desired, moved):
    """Weights of runs that split their batches differently agree as float rounding lets them:
    all but 1% of the values within ``SUM_ORDER_TOLERANCE`` of the largest move ``moved``, and
    every value within twice that. Pixels near the output's clip or a ReLU's kink can fall on
    the other side in the other run; measured (2026-12-06, two workers against one process,
    the network computed by ``networks.training_forward``) that moves 23 of a kernel's 7,776
    values by up to 6.8% of the largest move. A lost or double-counted example moves them all,
    by about 50%."""
    import numpy as np

    error = np.abs(np.asarray(actual) - np.asarray(desired))
    assert float(error.max()) <= 2 * SUM_ORDER_TOLERANCE * moved, (float(error.max()), moved)
    assert float(np.mean(error > SUM_ORDER_TOLERANCE * moved)) <= 0.01, \
        (float(np.mean(error > SUM_ORDER_TOLERANCE * moved)), moved)


def small_config(tmp_path, **overrides):
    from kperceptual import config

    values = dict(style_image="skimage:hubble_deep_field", train_data="skimage",
                  image_size=32, style_size=64, batch_size=2, steps=2, checkpoint_every=1,
                  log_every=1, sample_every=1, precision="float32",
                  model_dir=str(tmp_path / "run"), export_dir=str(tmp_path / "export"),
                  name="test_style")
    values.update(overrides)
    return config.StyleTrainingConfig(**values)


def copy_run(run, tmp_path):
    """Copies a finished run (the ``two_step_run`` fixture: ``small_config(steps=2)``'s
    model_dir and export_dir) to ``tmp_path``, where ``small_config(tmp_path)`` resumes it, as
    if that run had been trained there (its config.json names no folder a resume compares).
    Returns its paths as ``trainer.train`` did."""
    import shutil

    shutil.copytree(run["model_dir"], tmp_path / "run", ignore=shutil.ignore_patterns(".lock"))
    shutil.copytree(run["export_dir"], tmp_path / "export")
    return {"keras_path": str(tmp_path / "run" / os.path.basename(run["keras_path"])),
            "export_path": str(tmp_path / "export" / os.path.relpath(run["export_path"],
                                                                     run["export_dir"]))}


def random_pixels(shape, seed=0):
    return np.random.default_rng(seed).uniform(0, 255, shape).astype(np.float32)


def psnr(image, reference, peak=255.0):
    """Peak signal-to-noise ratio in dB of ``image`` against ``reference`` (pixels in [0, 255]);
    inf when they are equal."""
    error = np.mean((np.asarray(image, np.float64) - np.asarray(reference, np.float64)) ** 2)
    return float("inf") if error == 0 else float(10 * np.log10(peak ** 2 / error))


# Multi-style networks, small enough for the tests.
STYLES = ("starry_night", "wave", "udnie")


def small(num_styles=3, **kwargs):
    """A small untrained style network with ``num_styles`` named styles."""
    from kperceptual import networks

    kwargs.setdefault("style_names", STYLES[:num_styles] if num_styles > 1 else None)
    return networks.StyleTransferNetwork(filters=(8, 8, 8), num_residual_blocks=1,
                                         num_styles=num_styles, **kwargs)


def randomise_styles(network, seed=0):
    """Distinct, non-trivial gamma and beta per style (untrained ones are all 1 and 0)."""
    from kperceptual import networks

    rng = np.random.default_rng(seed)
    for layer in network.layers:
        if isinstance(layer, networks.ConditionalInstanceNormalization):
            gamma, beta = layer.get_weights()
            layer.set_weights([rng.uniform(0.5, 1.5, gamma.shape).astype(np.float32),
                               rng.normal(0, 0.5, beta.shape).astype(np.float32)])
    return network


def with_border_margin(network, image, style_weights=None):
    """``network``'s float output for uint8 ``image`` (H, W, 3) as the Stylizer and the exports
    apply it: reflection-padded by ``networks.border_margin`` (at most a side less one) on every
    side, the output cropped back. A multi-style network takes ``style_weights`` (N,)."""
    from kperceptual import networks

    margin = networks.border_margin(network)
    top, left = min(margin, image.shape[0] - 1), min(margin, image.shape[1] - 1)
    padded = np.pad(image, ((top, top), (left, left), (0, 0)), mode="reflect")
    inputs = padded[None].astype(np.float32)
    if style_weights is not None:
        inputs = [inputs, np.asarray(style_weights, np.float32).reshape(1, -1)]
    out = np.asarray(network(inputs))[0]
    return out[top:top + image.shape[0], left:left + image.shape[1]]


# -- tests/backend_worker.py, served: one process per Keras backend for a test session --------
# A JAX or PyTorch worker process spends about 25 s (measured beside a training run) importing
# its backend and building its first loss network before any command; a served worker pays
# that once per pytest process and runs every command of that backend's tests after it.
WORKER = os.path.join(REPO, "tests", "backend_worker.py")
REPLY = "backend_worker reply: "  # backend_worker.REPLY (importing it would import Keras)
_SERVED = {}  # (backend, env) -> (process, its stdout lines, its stderr file)


def _served(backend, env):
    import queue
    import subprocess
    import sys
    import tempfile
    import threading

    key = (backend, tuple(sorted(env.items())))
    if key in _SERVED and _SERVED[key][0].poll() is None:
        return _SERVED[key]
    stderr = tempfile.TemporaryFile("w+")
    process = subprocess.Popen(
        [sys.executable, WORKER, "serve"], stdin=subprocess.PIPE, stdout=subprocess.PIPE,
        stderr=stderr, text=True, cwd=REPO,
        env={**os.environ, "KERAS_BACKEND": backend,  # this tree's package, in its children too
             "PYTHONPATH": os.pathsep.join(filter(None, [REPO, os.environ.get("PYTHONPATH")])),
             **env})
    lines = queue.Queue()

    def read():
        for line in process.stdout:
            lines.put(line)
        lines.put(None)  # the process ended

    threading.Thread(target=read, daemon=True).start()
    _SERVED[key] = (process, lines, stderr)
    return _SERVED[key]


def worker_call(backend, *args, timeout, env=None):
    """Runs one tests/backend_worker.py command in this session's served worker for
    ``backend`` and ``env`` (more environment variables, e.g. XLA_FLAGS, which a process reads
    once), started on first use; returns its reply (a dict). Fails the test with the command's
    traceback, or the worker's last error output if it died or took over ``timeout`` seconds
    (then it is stopped, and the next call starts another)."""
    import json
    import queue
    import time

    process, lines, stderr = _served(backend, env or {})
    process.stdin.write(json.dumps([str(a) for a in args]) + "\n")
    process.stdin.flush()
    deadline = time.monotonic() + timeout
    reply = None
    while reply is None:
        try:
            line = lines.get(timeout=max(0.0, deadline - time.monotonic()))
        except queue.Empty:
            line = None
        if line is None:  # died or too slow
            how = "timed out" if process.poll() is None else "died"
            process.kill()
            process.wait()
            stderr.seek(0)
            pytest.fail(f"backend_worker.py serve ({backend}) {args[0]}: {how}:\n"
                        f"{stderr.read()[-3000:]}")
        if REPLY in line:  # (after anything printed without a newline before it)
            reply = json.loads(line[line.index(REPLY) + len(REPLY):])
    assert "error" not in reply, f"{backend} worker, {args[0]}:\n{reply['error'][-3000:]}"
    return reply


def stop_served_workers(backend=None, env=None):
    """Ends the served workers (their stdin closes; they exit after their command): all, or the
    one for ``backend`` and ``env`` (a worker no other test uses, to free its memory)."""
    keys = list(_SERVED) if backend is None else [(backend, tuple(sorted((env or {}).items())))]
    for key in keys:
        if key not in _SERVED:
            continue
        process, _, stderr = _SERVED.pop(key)
        process.stdin.close()
        try:
            process.wait(timeout=60)
        except Exception:
            process.kill()
            process.wait()
        stderr.close()


CLI_CASES = os.path.join(REPO, "tests", "cli_cases.py")


def _error_lines(verb, stderr):
    return [line for line in stderr.splitlines() if line.startswith(f"kperceptual.{verb}:")]


def assert_one_line_errors(verb, cases, cwd, timeout=600):
    """Runs ``python -m kperceptual.<verb>``'s main on each ``(args, message)`` of ``cases``
    in one process (tests/cli_cases.py) and asserts that each exits with status 2 and prints
    one line ``kperceptual.<verb>: message...``. The first case also runs as the real command,
    which must end the same way."""
    import json
    import subprocess
    import sys

    env = dict(os.environ, PYTHONPATH=REPO, TF_CPP_MIN_LOG_LEVEL="3")
    done = subprocess.run([sys.executable, CLI_CASES, verb, json.dumps([a for a, _ in cases])],
                          cwd=cwd, env=env, capture_output=True, text=True, timeout=timeout)
    replies = [line for line in done.stdout.splitlines() if line.startswith("[")]
    assert done.returncode == 0 and replies, done.stderr[-3000:]
    results = json.loads(replies[-1])
    assert len(results) == len(cases)
    wrong = []
    for (args, message), result in zip(cases, results):
        lines = _error_lines(verb, result["stderr"])
        if result["returncode"] != 2 or len(lines) != 1 or not lines[0].startswith(
                f"kperceptual.{verb}: {message}"):
            wrong.append(f"{args}: exit {result['returncode']}: {result['stderr'][-1500:]}")
    assert not wrong, "\n".join(wrong)
    real = subprocess.run([sys.executable, "-m", f"kperceptual.{verb}", *cases[0][0]], cwd=cwd,
                          env=env, capture_output=True, text=True, timeout=timeout)
    assert (real.returncode, _error_lines(verb, real.stderr)) == (
        results[0]["returncode"], _error_lines(verb, results[0]["stderr"])), real.stderr[-1500:]


TIMEOUT = 600  # seconds: a backend worker command


def run_worker(backend, *args, env=None):
    """Runs a tests/backend_worker.py command on ``backend`` with ``env``; returns its JSON
    line. On JAX and PyTorch, in the session's served worker for that backend and env
    (``worker_call``: one start-up for all their commands); on TensorFlow in a process
    of its own (two_replicas splits the CPU before TensorFlow starts)."""
    if backend in ("jax", "torch"):
        result = worker_call(backend, *args, timeout=TIMEOUT, env=env)
        assert result["backend"] == backend
        return result
    import json
    import subprocess
    import sys

    done = subprocess.run(
        [sys.executable, WORKER, *map(str, args)], capture_output=True, text=True,
        timeout=TIMEOUT, cwd=REPO,
        env={**os.environ, "KERAS_BACKEND": backend, **(env or {})})
    assert done.returncode == 0, done.stderr[-3000:]
    result = json.loads(done.stdout.strip().splitlines()[-1])
    assert result["backend"] == backend
    return result


def config_json(tmp_path, **overrides):
    """``small_config(tmp_path, **overrides)`` as the JSON a backend worker command reads."""
    import json

    config = small_config(tmp_path, **overrides)
    return json.dumps({k: v for k, v in config.to_dict().items() if k != "task"})
