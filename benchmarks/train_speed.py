"""Training speed on each Keras backend: seconds per step of the style network + VGG16 loss
(relu1_2..relu4_3) at 256x256, for each precision and compilation setting; and the input
pipelines' images per second (tf.data and keras.utils.PyDataset).

    python benchmarks/train_speed.py [--backends=tensorflow,jax,torch] [--batch_sizes=4]
        [--precisions=float32,mixed_bfloat16,mixed_float16] [--jit_compile=off,on] [--steps=5]
        [--train_data=../shared/data/train]

Each backend runs in its own process (Keras fixes its backend when first imported), on random
pixels held in memory, so only the step is timed. Writes its table into docs/benchmarks.md
(section "Training speed"), with the machine it ran on. Runs without TensorFlow too (a GPU
machine with JAX only: ``KERAS_BACKEND=jax python benchmarks/train_speed.py --backends=jax``);
the tf.data rate is then left out. Run it on an otherwise idle machine.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import tempfile
import time

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
from kperceptual import cli  # noqa: E402,F401

import numpy as np  # noqa: E402
from absl import app, flags  # noqa: E402

from benchmarks import report  # noqa: E402

flags.DEFINE_list("backends", ["tensorflow", "jax", "torch"], "Keras backends to time.")
flags.DEFINE_list("precisions", ["float32", "mixed_bfloat16"], "Precisions to time "
                  "(mixed_float16 too on a GPU; on a CPU it is emulated and tens of times slower).")
flags.DEFINE_list("jit_compile", ["off", "on"], "--jit_compile settings to time (on: XLA for "
                  "tensorflow and jax, torch.compile for torch).")
flags.DEFINE_list("batch_sizes", ["4"], "Batch sizes to time.")
flags.DEFINE_integer("image_size", 256, "Side of the square training images.")
flags.DEFINE_integer("steps", 5, "Timed steps per setting (after 2 warm-up steps).")
flags.DEFINE_integer("pipeline_batches", 40, "Timed input-pipeline batches of 4 (0: skip).")
flags.DEFINE_string("section", "Training speed", "The docs/benchmarks.md section to write.")
flags.DEFINE_string("train_data", os.path.join(report.SHARED_DATA, "train"),
                    "Folder of real photos for the pipeline rates.")
flags.DEFINE_integer("timeout", 3600, "Seconds allowed for each backend's process.")
flags.DEFINE_bool("child", False, "Internal: time the settings on this process's backend.")
FLAGS = flags.FLAGS

WARMUP = 2
PAPER_STEPS = 40_000


def seconds_per_step(precision: str, jit: str, batch_size: int) -> float:
    """Median seconds of one training step (forward, loss, backward, Adam), after warm-up."""
    import keras

    from kperceptual import choices
    from kperceptual.training import trainer
    from kperceptual import config as config_lib

    class StepTimes(keras.callbacks.Callback):
        def on_train_begin(self, logs=None):
            self.times = [time.perf_counter()]

        def on_train_batch_end(self, batch, logs=None):
            float(np.mean(logs["loss"]))  # waits for the step (JAX dispatches asynchronously)
            self.times.append(time.perf_counter())

    config = config_lib.StyleTrainingConfig(style_image="skimage:hubble_deep_field",
                                            image_size=FLAGS.image_size, batch_size=batch_size)
    shape = (batch_size * (FLAGS.steps + WARMUP), FLAGS.image_size, FLAGS.image_size, 3)
    pixels = np.random.default_rng(0).integers(0, 256, shape, np.uint8)
    with trainer.dtype_policy(precision):
        t = trainer.build_trainer(config, jit_compile=choices.JIT_COMPILE[jit])
        timer = StepTimes()
        t.fit(pixels, batch_size=batch_size, epochs=1, callbacks=[timer], verbose=0,
              shuffle=False)
    return float(np.median(np.diff(timer.times)[WARMUP:]))


def child() -> None:
    """Prints one JSON line per setting on this process's backend."""
    import keras

    for batch_size in map(int, FLAGS.batch_sizes):
        for precision in FLAGS.precisions:
            for jit in FLAGS.jit_compile:
                row = {"backend": keras.backend.backend(), "batch_size": batch_size,
                       "precision": precision, "jit_compile": jit}
                try:
                    row["seconds"] = seconds_per_step(precision, jit, batch_size)
                except Exception as e:  # noqa: BLE001 (a setting a backend lacks is a result)
                    row["error"] = f"{type(e).__name__}: {str(e).splitlines()[0][:120]}"
                print(json.dumps(row), flush=True)


def run_backend(backend: str, argv) -> list[dict]:
    """Runs this script's ``--child`` on ``backend``; returns (and prints, as they come) its
    rows."""
    args = [a for a in argv[1:] if not a.startswith("--backends")]  # the flags as given
    rows = []
    with tempfile.TemporaryFile("w+") as log:
        process = subprocess.Popen([sys.executable, os.path.abspath(__file__), "--child", *args],
                                   env={**os.environ, "KERAS_BACKEND": backend}, text=True,
                                   stdout=subprocess.PIPE, stderr=log)
        try:
            for line in process.stdout:
                if line.startswith("{"):
                    rows.append(json.loads(line))
                    print(rows[-1], flush=True)
            process.wait(timeout=FLAGS.timeout)
        finally:
            if process.poll() is None:
                process.kill()
        log.seek(0)
        errors = log.read().strip().splitlines()
    if process.returncode or not rows:
        last = (errors or ["no output"])[-1]
        rows.append({"backend": backend, "error": f"process failed: {last[:160]}"})
    return rows


def pipeline_rates(folder: str, batches: int) -> list[str]:
    """Images per second of each loader reading ``folder`` (decode, resize, crop to 256)."""
    from kperceptual import tf_fence
    from kperceptual.data import loaders as data_loaders
    from kperceptual.data import sources as data

    source = data.TrainingImages(folder, 256)
    loaders = (["tf_data"] if tf_fence.tensorflow_available() else []) + ["py_dataset"]
    rows = []
    for loader in loaders:
        batches_of = data_loaders.batches(source, 4, seed=0, loader=loader, num_batches=batches + 5)
        iterator = iter(batches_of) if loader == "tf_data" else (
            batches_of[i] for i in range(batches + 5))
        for _ in range(5):
            next(iterator)
        start = time.perf_counter()
        for _ in range(batches):
            next(iterator)
        rate = batches * 4 / (time.perf_counter() - start)
        rows.append(f"| {loader} | {len(source.files)} real photos | {4 / rate:.3f} s/batch of 4 "
                    f"| {rate:.1f} images/s |")
        print(rows[-1], flush=True)
    return rows


def step_table(rows: list[dict]) -> list[str]:
    base = {(r["backend"], r["batch_size"]): r["seconds"] for r in rows
            if r.get("precision") == "float32" and r.get("jit_compile") == "off" and "seconds" in r}
    lines = ["| backend | batch | precision | jit_compile | s/step | images/s | vs float32, "
             "jit off | 40k steps |", "|---|---|---|---|---|---|---|---|"]
    for r in rows:
        if "seconds" not in r:
            lines.append(f"| {r['backend']} | {r.get('batch_size', '')} | "
                         f"{r.get('precision', '')} | {r.get('jit_compile', '')} | "
                         f"failed: {r['error']} | | | |")
            continue
        s = r["seconds"]
        ref = base.get((r["backend"], r["batch_size"]))
        lines.append(f"| {r['backend']} | {r['batch_size']} | {r['precision']} | "
                     f"{r['jit_compile']} | {s:.2f} | {r['batch_size'] / s:.2f} | "
                     f"{f'{ref / s:.2f}x' if ref else ''} | {s * PAPER_STEPS / 3600:.1f} h |")
    return lines


def main(argv):
    if FLAGS.child:
        child()
        return
    del argv  # absl has parsed the flags out; the children get them from sys.argv
    rows = [row for backend in FLAGS.backends for row in run_backend(backend, sys.argv)]
    pipelines = []
    if FLAGS.pipeline_batches and not os.path.isdir(FLAGS.train_data):
        sys.exit(f"train_speed: {FLAGS.train_data}: no such folder; the pipeline rates need real "
                 "photos (../shared/data/train beside the repository, or --train_data=FOLDER)")
    if FLAGS.pipeline_batches:
        pipelines = ["", "Input pipelines, what `--loader` chooses between (decode + resize + "
                     "crop to 256, batches of 4):", "", "| loader | data | time | throughput |",
                     "|---|---|---|---|", *pipeline_rates(FLAGS.train_data, FLAGS.pipeline_batches)]
    body = "\n".join([
        f"Style transformation network + VGG16 loss (relu1_2..relu4_3), "
        f"{FLAGS.image_size}x{FLAGS.image_size}, Adam, the same `compute_loss` on every "
        f"backend; median of {FLAGS.steps} steps after {WARMUP} warm-up steps, on pixels held "
        f"in memory. jit_compile on: XLA (tensorflow, jax) or torch.compile (torch). The last "
        f"column projects the paper's {PAPER_STEPS:,} steps (paper: about 4 hours on a GTX "
        f"Titan X, batch 4).",
        "",
        *step_table(rows),
        *pipelines,
    ])
    report.write_section(FLAGS.section, body, sys.argv)


if __name__ == "__main__":
    app.run(main)
