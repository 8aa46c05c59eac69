"""Training speed: seconds per step at 256x256, batch 4, and input-pipeline images per second.

    python benchmarks/train_speed.py [--steps=10] [--train_data=../shared/data/train]

Writes its table into docs/benchmarks.md (section "Training speed"), with the machine it ran on.
Run it on an otherwise idle machine. The pipeline rate needs a folder of real photos; by default
the ones in ../shared/data/train (the repository's development data), else pass --train_data.
"""

from __future__ import annotations

import os
import sys
import time

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
from kperceptual import cli  # noqa: E402,F401

import keras  # noqa: E402
import numpy as np  # noqa: E402
import tensorflow as tf  # noqa: E402
from absl import app, flags  # noqa: E402

from benchmarks import report  # noqa: E402
from kperceptual import config as config_lib  # noqa: E402
from kperceptual import data, trainer  # noqa: E402
from kperceptual.precision import resolve_precision  # noqa: E402

flags.DEFINE_integer("steps", 10, "Timed training steps per precision (after 2 warm-up steps).")
flags.DEFINE_integer("pipeline_batches", 40, "Timed pipeline batches.")
flags.DEFINE_string("train_data", os.path.join(report.SHARED_DATA, "train"),
                    "Folder of real photos for the pipeline rate.")
flags.DEFINE_list("precisions", ["float32", "mixed_bfloat16"], "Precisions to time.")
FLAGS = flags.FLAGS


class _StepTimes(keras.callbacks.Callback):
    def on_train_begin(self, logs=None):
        self.times = [time.perf_counter()]

    def on_train_batch_end(self, batch, logs=None):
        self.times.append(time.perf_counter())


def seconds_per_step(precision: str, steps: int) -> float:
    config = config_lib.StyleTrainingConfig(style_image="skimage:hubble_deep_field",
                                            image_size=256, batch_size=4)
    batch = np.stack([np.random.default_rng(i).integers(0, 256, (256, 256, 3), np.uint8)
                      for i in range(4)])
    with trainer.dtype_policy(precision):
        t = trainer.build_trainer(config)
        timer = _StepTimes()
        t.fit(tf.data.Dataset.from_tensors(batch).repeat(), steps_per_epoch=steps + 2, epochs=1,
              callbacks=[timer], verbose=0, shuffle=False)
    return float(np.median(np.diff(timer.times)[2:]))


def pipeline_rate(folder: str, batches: int) -> tuple[float, int]:
    source = data.TrainingImages(folder, 256)
    iterator = iter(source.dataset(4, seed=0))
    for _ in range(5):
        next(iterator)
    start = time.perf_counter()
    for _ in range(batches):
        next(iterator)
    return batches * 4 / (time.perf_counter() - start), len(source.files)


def main(argv):
    del argv
    rows = []
    for precision in FLAGS.precisions:
        s = seconds_per_step(precision, FLAGS.steps)
        rows.append(f"| training step, {precision} | {s:.2f} s/step | {4 / s:.2f} images/s |")
        print(rows[-1], flush=True)
    if not os.path.isdir(FLAGS.train_data):
        sys.exit(f"train_speed: {FLAGS.train_data}: no such folder; the pipeline rate needs real "
                 "photos (../shared/data/train beside the repository, or --train_data=FOLDER)")
    rate, n = pipeline_rate(FLAGS.train_data, FLAGS.pipeline_batches)
    rows.append(f"| input pipeline ({n} real photos, decode + resize + crop to 256) | "
                f"{4 / rate:.3f} s/batch | {rate:.1f} images/s |")
    print(rows[-1])
    auto = resolve_precision("auto")
    body = "\n".join([
        f"Style transformation network + VGG16 loss (relu1_2..relu4_3), 256x256, batch 4, Adam; "
        f"median of {FLAGS.steps} steps after 2 warm-up steps. `--precision=auto` picks "
        f"**{auto}** on this machine.",
        "",
        "| what | time | throughput |",
        "|---|---|---|",
        *rows,
        "",
        "Compare with the section \"PyTorch reference\" (`benchmarks/torch_reference.py`): a "
        "straightforward float32 PyTorch implementation of the same network and loss, run on the "
        "same machine.",
    ])
    report.write_section("Training speed", body, sys.argv)


if __name__ == "__main__":
    app.run(main)
