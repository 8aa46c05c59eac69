"""MultiWorkerMirroredStrategy: two worker processes on 127.0.0.1 train a two-style network
together, write through the chief only, resume together, and match one-process training on the
same global batch."""

import json
import os
import socket
import subprocess
import sys
import time

import keras
import numpy as np
import pytest
import tensorflow as tf

from helpers import REPO, SGD_LEARNING_RATE, WORKER, assert_same_sum, small_config
from kperceptual.training import checkpoints
from kperceptual.training import trainer

TIMEOUT = 300  # seconds for both workers, start to finish


def free_ports(n):
    sockets = [socket.socket() for _ in range(n)]
    try:
        for s in sockets:
            s.bind(("127.0.0.1", 0))
        return [s.getsockname()[1] for s in sockets]
    finally:
        for s in sockets:
            s.close()


def run_cluster(tmp_path, config_json, tag, optimizer):
    """Starts two workers, waits for both (bounded), stops both whatever happens; returns their
    results and trained weights."""
    cluster = {"worker": [f"127.0.0.1:{port}" for port in free_ports(2)]}
    processes, logs = [], []
    try:
        for index in range(2):
            env = {**os.environ, "KERAS_BACKEND": "tensorflow", "TF_CPP_MIN_LOG_LEVEL": "2",
                   "TF_CONFIG": json.dumps({"cluster": cluster,
                                            "task": {"type": "worker", "index": index}})}
            log = open(tmp_path / f"{tag}_worker{index}.log", "w+")
            logs.append(log)
            processes.append(subprocess.Popen(
                [sys.executable, WORKER, "train", config_json,
                 tmp_path / f"{tag}_worker{index}.npz", optimizer],
                stdout=log, stderr=subprocess.STDOUT, cwd=REPO, env=env))
        deadline = time.monotonic() + TIMEOUT
        for process in processes:
            try:
                process.wait(timeout=max(1, deadline - time.monotonic()))
            except subprocess.TimeoutExpired:
                pass  # reported below, with the workers' output
    finally:
        for process in processes:
            if process.poll() is None:
                process.kill()
                process.wait()
    results, weights = [], []
    for index, (process, log) in enumerate(zip(processes, logs)):
        log.seek(0)
        output = log.read()
        log.close()
        assert process.returncode == 0, (f"worker {index} "
                                         f"{'timed out' if process.returncode < 0 else 'failed'}"
                                         f":\n{output[-3000:]}")
        # The last JSON line: the chief's coordination service may log a worker's exit after it.
        results.append(json.loads([line for line in output.strip().splitlines()
                                   if line.startswith("{")][-1]))
        with np.load(tmp_path / f"{tag}_worker{index}.npz") as f:
            weights.append([f[k] for k in f.files])
    return results, weights


@pytest.mark.slow
def test_two_workers_train_like_one_process_and_resume(tmp_path, vgg_weights_path,
                                                       monkeypatch):
    # Plain SGD: Adam's first steps move every weight by about the learning rate whatever the
    # size of its gradient, so float rounding in the all-reduce of tiny gradients would show.
    # No sample images (nothing here reads them; the chief would write them every step).
    common = dict(steps=3, batch_size=2, learning_rate=SGD_LEARNING_RATE, sample_every=100,
                  export_dir=str(tmp_path / "export"))
    # Two styles: each batch is a {"pixels", "style"} dict, from which Keras alone could not
    # build the trainer on several workers (tf_step.symbolic_build).
    common["style_image"] = "skimage:hubble_deep_field,skimage:retina"
    config = small_config(tmp_path, strategy="multi_worker", **common)
    config_json = json.dumps({k: v for k, v in config.to_dict().items() if k != "task"})
    results, weights = run_cluster(tmp_path, config_json, "first", "sgd")

    assert [r["distribution"] for r in results] == [
        "tensorflow, worker 0 of 2 (chief), 2 replicas in all",
        "tensorflow, worker 1 of 2, 2 replicas in all"]
    assert [r["trained_steps"] for r in results] == [3, 3]
    for w0, w1 in zip(*weights):  # all-reduced updates: the workers stay identical
        np.testing.assert_array_equal(w0, w1)
    # Only the chief writes: checkpoints, the .keras file, the export.
    assert results[0]["keras_path"] and results[0]["export_path"]
    assert results[1]["keras_path"] is None and results[1]["export_path"] is None
    saved = checkpoints.list_checkpoints(str(tmp_path / "run" / "checkpoints"))
    assert [s for s, _ in saved] == [2, 3]
    assert sorted(os.listdir(tmp_path / "export" / "test_style")) == ["1"]

    # One process, one replica, the same global batches (each worker read half of each); only
    # its weights are compared, so it exports no SavedModel.
    alone = {**common, "export_dir": str(tmp_path / "single" / "export")}
    with monkeypatch.context() as patched:
        patched.setattr(trainer, "export_saved_model", lambda *args, **kwargs: None)
        single = trainer.train(small_config(tmp_path / "single", **alone), verbose=0,
                               optimizer=lambda: keras.optimizers.SGD(common["learning_rate"]))
    assert single["trained_steps"] == 3 and single["export_path"] is None
    keras.utils.set_random_seed(0)  # as train does: the workers' initial weights
    start = trainer.build_trainer(config, tf.distribute.MirroredStrategy(["/cpu:0"]))
    start = start.network.get_weights()
    moved = max(np.abs(w - s).max() for w, s in zip(weights[0], start))
    assert moved > 1e-4
    for mine, theirs in zip(single["network"].get_weights(), weights[0]):
        assert_same_sum(theirs, mine, moved)

    # Both resume from the chief's newest checkpoint and carry on together.
    config.steps = 5
    config_json = json.dumps({k: v for k, v in config.to_dict().items() if k != "task"})
    results, weights = run_cluster(tmp_path, config_json, "resumed", "sgd")
    assert [(r["steps"], r["trained_steps"]) for r in results] == [(5, 2), (5, 2)]
    for w0, w1 in zip(*weights):
        np.testing.assert_array_equal(w0, w1)
    assert sorted(os.listdir(tmp_path / "export" / "test_style")) == ["1", "2"]
