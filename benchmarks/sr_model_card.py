"""Writes the training part of a shipped super-resolution model's card, docs/models/<name>.md,
from its training run's folder; ``benchmarks/super_resolution.py`` fills in its "Measured"
section.

    python benchmarks/sr_model_card.py --run=runs/sr_x4_pixel [--name=sr_x4_pixel]
        [--note="what else to say"]

It reads ``config.json`` (the settings), the checkpoints (the steps) and
``convergence.jsonl`` (written by ``benchmarks/sr_convergence.py`` beside the run: the Set5
scores and wall-clock time of each checkpoint). CPU hours are wall-clock hours times the
machine's cores; a card says when another job shared them.
"""

from __future__ import annotations

import datetime
import json
import os
import sys

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))

from absl import app, flags  # noqa: E402

import report  # noqa: E402

flags.DEFINE_string("run", None, "The training run's --model_dir.")
flags.DEFINE_string("name", "", "Model name; default: the run's.")
flags.DEFINE_string("note", "", "A paragraph to add (e.g. what shared the CPU).")
flags.DEFINE_string("set", "Set5", "The set convergence.jsonl was scored on "
                                   "(sr_convergence.py --set).")
flags.DEFINE_float("shared", 1.0, "How many training jobs shared the machine on average: the "
                                  "card divides the CPU hours by it.")
FLAGS = flags.FLAGS

CARDS = os.path.join(report.REPO, "docs", "models")
MEASURED = "## Measured"
SETTINGS = ("scale", "loss", "pixel_loss", "pixel_weight", "chroma_weight", "grid_weight",
            "loss_shift", "residual", "norm", "upsample",
            "padding", "image_size", "batch_size", "blur_sigma", "learning_rate", "lr_schedule",
            "warmup_steps", "ema", "init_from", "content_weight", "content_layers",
            "tv_weight", "precision", "seed")


def training_section(run_dir: str, name: str) -> str:
    from kperceptual.training import checkpoints as checkpoints_lib

    with open(os.path.join(run_dir, "config.json")) as f:
        config = json.load(f)
    checkpoints = checkpoints_lib.list_checkpoints(os.path.join(run_dir, "checkpoints"))
    steps = checkpoints[-1][0] if checkpoints else 0
    rows = []
    path = os.path.join(run_dir, "convergence.jsonl")
    if os.path.exists(path):
        with open(path) as f:
            rows = sorted((json.loads(line) for line in f if line.strip()),
                          key=lambda r: r["step"])
    seconds = rows[-1]["seconds"] if rows and rows[-1]["step"] == steps else None
    if seconds is None and checkpoints:
        seconds = (os.path.getmtime(checkpoints[-1][1])
                   - os.path.getmtime(os.path.join(run_dir, "config.json")))
    cores = os.cpu_count() or 1
    cpu_hours = (seconds or 0) * cores / 3600 / FLAGS.shared
    lines = [f"# {name}", "",
             f"A x{config['scale']} super-resolution network "
             f"(`kperceptual.networks.SuperResolutionNetwork`) trained with "
             f"{'the pixel loss' if config['loss'] == 'pixel' else 'feature reconstruction at ' + ', '.join(config['content_layers'])}"
             f" by this project's code: `python -m kperceptual.train "
             f"--flagfile=pipelines/{name}.flags`.", "",
             "| | |", "|---|---|",
             f"| steps | {steps:,} |",
             f"| examples seen | {steps * config['batch_size']:,} patches of "
             f"{config['image_size']}x{config['image_size']} |",
             f"| wall-clock | {(seconds or 0) / 3600:.2f} h |",
             f"| CPU hours | {cpu_hours:.1f} ({cores} cores"
             f"{f', shared by {FLAGS.shared:g} jobs on average' if FLAGS.shared != 1 else ''}) |",
             f"| machine | {report.machine()} |",
             f"| data | `{config['train_data']}` (2,189 photos: ../shared/data/README.md lists "
             "their sources; none is in Set5, Set14 or BSD100) |",
             f"| written | {datetime.date.today().isoformat()} |"]
    lines += ["", "Settings (`config.json` of the run):", "", "| setting | value |", "|---|---|"]
    lines += [f"| {k} | `{config[k]}` |" for k in SETTINGS if k in config]
    if rows:
        lines += ["", f"{FLAGS.set} during training (`benchmarks/sr_convergence.py`, moving-average "
                      "weights, the evaluation protocol of docs/super_resolution.md):", "",
                  "| step | minutes | PSNR (dB) | SSIM | LPIPS |", "|---|---|---|---|---|"]
        lines += [f"| {r['step']:,} | {r['seconds'] / 60:.0f} | {r['psnr']:.2f} | "
                  f"{r['ssim']:.4f} | {r.get('lpips', float('nan')):.4f} |" for r in rows]
    if FLAGS.note:
        lines += ["", FLAGS.note]
    return "\n".join(lines) + "\n"


def main(argv):
    del argv
    if not FLAGS.run or not os.path.isfile(os.path.join(FLAGS.run, "config.json")):
        sys.exit(f"sr_model_card: --run: {FLAGS.run} is not a training run's folder")
    with open(os.path.join(FLAGS.run, "config.json")) as f:
        name = FLAGS.name or json.load(f)["name"]
    path = os.path.join(CARDS, f"{name}.md")
    measured = ""
    if os.path.exists(path):
        text = open(path).read()
        if MEASURED in text:
            measured = text[text.index(MEASURED):]
    os.makedirs(CARDS, exist_ok=True)
    with open(path, "w") as f:
        f.write(training_section(FLAGS.run, name) + ("\n" + measured if measured else ""))
    print(path)


if __name__ == "__main__":
    app.run(main)
