"""What an hour of training buys: Set5 PSNR, SSIM and LPIPS of a super-resolution run against
its training step and time, for docs/super_resolution.md's convergence study.

    python benchmarks/sr_convergence.py --run=runs/sr_x4_pixel --watch   # beside a training run
    python benchmarks/sr_convergence.py --runs=runs/a,runs/b --plot      # the table and the plot

With ``--watch`` it scores every checkpoint of ``--run`` as it appears (the weights' moving
average where the run keeps one, as the export would), until the run's ``.keras`` file is
written, and appends one JSON line per checkpoint to ``<run>/convergence.jsonl``: the step, the
wall-clock seconds since the run's first step (the training machine's cores, all of them) and
the scores. It uses one CPU thread, so it slows a training run beside it only a little.
``--plot`` draws every run's PSNR and LPIPS against time into
``docs/images/sr_convergence.png`` (Pillow) and prints a Markdown table. x4 runs are scored on
Set5's ``LR_x4`` inputs (MATLAB bicubic), x8 runs on Set5 ``HR`` degraded as in training.
"""

from __future__ import annotations

import json
import os
import sys
import tempfile
import time

os.environ.setdefault("TF_NUM_INTRAOP_THREADS", "1")
os.environ.setdefault("TF_NUM_INTEROP_THREADS", "1")
os.environ.setdefault("OMP_NUM_THREADS", "1")
os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))

from absl import app, flags  # noqa: E402

import report  # noqa: E402

flags.DEFINE_string("run", None, "A training run's --model_dir to score.")
flags.DEFINE_bool("watch", False, "Keep scoring new checkpoints until the run ends.")
flags.DEFINE_list("runs", [], "Runs to plot and tabulate (with --plot).")
flags.DEFINE_bool("plot", False, "Draw docs/images/sr_convergence.png and print the table.")
flags.DEFINE_string("set", "Set5", "Benchmark set under ../shared/data/sr.")
flags.DEFINE_bool("lpips", True, "Also score LPIPS (needs the VGG16 weights).")
FLAGS = flags.FLAGS

RESULTS = "convergence.jsonl"
PLOT = os.path.join(report.REPO, "docs", "images", "sr_convergence.png")


def run_config(run_dir: str):
    from kperceptual import config as config_lib

    with open(os.path.join(run_dir, "config.json")) as f:
        saved = json.load(f)
    saved.pop("task", None)
    return config_lib.SuperResolutionConfig(**saved)


def pairs_for(config):
    from kperceptual.evaluation import super_resolution as evaluation

    root = os.path.join(report.SHARED_DATA, "sr", FLAGS.set)
    lr = os.path.join(root, f"LR_x{config.scale}")
    return evaluation.load_pairs(os.path.join(root, "HR"), lr if os.path.isdir(lr) else None,
                                 config.scale, blur_sigma=config.blur_sigma)


def score_checkpoint(config, path: str, pairs) -> dict:
    from kperceptual.evaluation import super_resolution as evaluation
    from kperceptual.training import trainer

    with tempfile.TemporaryDirectory() as tmp:
        keras_path = os.path.join(tmp, f"{config.name}.keras")
        trainer.network_from_checkpoint(config, path).save(keras_path)
        results = evaluation.evaluate([keras_path], pairs, config.scale, use_lpips=FLAGS.lpips,
                                      keep_outputs=False)
    return next(iter(results.values()))["mean"]


def watch(run_dir: str) -> None:
    from kperceptual.training import checkpoints

    config = run_config(run_dir)
    pairs = pairs_for(config)
    out = os.path.join(run_dir, RESULTS)
    done = set()
    if os.path.exists(out):
        with open(out) as f:
            done = {json.loads(line)["step"] for line in f if line.strip()}
    started = os.path.getmtime(os.path.join(run_dir, "config.json"))
    while True:
        for step, path in checkpoints.list_checkpoints(os.path.join(run_dir, "checkpoints")):
            if step in done:
                continue
            try:
                written = os.path.getmtime(path)
                scores = score_checkpoint(config, path, pairs)
            except (OSError, ValueError) as e:  # removed or half-written meanwhile
                print(f"sr_convergence: {path}: {e}", file=sys.stderr)
                continue
            row = {"step": step, "seconds": round(written - started, 1), **scores}
            with open(out, "a") as f:
                f.write(json.dumps(row) + "\n")
            print(json.dumps(row), flush=True)
            done.add(step)
        if not FLAGS.watch or os.path.exists(os.path.join(run_dir, f"{config.name}.keras")) \
                and not [s for s, _ in checkpoints.list_checkpoints(
                    os.path.join(run_dir, "checkpoints")) if s not in done]:
            return
        time.sleep(20)


def load_rows(run_dir: str) -> list[dict]:
    with open(os.path.join(run_dir, RESULTS)) as f:
        return sorted((json.loads(line) for line in f if line.strip()), key=lambda r: r["step"])


def plot(runs: list[str]) -> str:
    """Draws PSNR and LPIPS against minutes for each run; returns the Markdown table."""
    from PIL import Image, ImageDraw

    data = {os.path.basename(os.path.normpath(r)): load_rows(r) for r in runs}
    width, height, pad = 900, 380, 50
    image = Image.new("RGB", (width, 2 * height), "white")
    draw = ImageDraw.Draw(image)
    colours = [(31, 119, 180), (214, 39, 40), (44, 160, 44), (148, 103, 189), (255, 127, 14)]
    max_minutes = max(r["seconds"] / 60 for rows in data.values() for r in rows) or 1
    for panel, key in enumerate(("psnr", "lpips")):
        values = [r[key] for rows in data.values() for r in rows if key in r]
        if not values:
            continue
        low, high = min(values), max(values)
        span = (high - low) or 1
        top = panel * height
        draw.rectangle([pad, top + pad, width - pad, top + height - pad], outline="black")
        draw.text((pad, top + 10), f"Set5 {key.upper()} against training minutes "
                                   f"({'higher' if key == 'psnr' else 'lower'} is better); "
                                   f"range {low:.3f} .. {high:.3f}", fill="black")
        for i, (name, rows) in enumerate(data.items()):
            points = [(pad + (width - 2 * pad) * r["seconds"] / 60 / max_minutes,
                       top + height - pad - (height - 2 * pad) * (r[key] - low) / span)
                      for r in rows if key in r]
            colour = colours[i % len(colours)]
            if len(points) > 1:
                draw.line(points, fill=colour, width=2)
            for x, y in points:
                draw.ellipse([x - 3, y - 3, x + 3, y + 3], fill=colour)
            draw.text((width - pad - 260, top + pad + 8 + 14 * i), name, fill=colour)
        draw.text((pad, top + height - pad + 8), f"0 .. {max_minutes:.0f} minutes",
                  fill="black")
    os.makedirs(os.path.dirname(PLOT), exist_ok=True)
    from kperceptual.imaging import files

    with files.atomic_path(PLOT) as tmp:
        image.save(tmp)
    lines = ["| run | step | minutes | PSNR (dB) | SSIM | LPIPS |", "|---|---|---|---|---|---|"]
    for name, rows in data.items():
        for r in rows:
            lpips = f"{r['lpips']:.4f}" if "lpips" in r else "-"
            lines.append(f"| {name} | {r['step']:,} | {r['seconds'] / 60:.0f} | "
                         f"{r['psnr']:.2f} | {r['ssim']:.4f} | {lpips} |")
    return "\n".join(lines)


def main(argv):
    if FLAGS.plot:
        print(plot(FLAGS.runs or ([FLAGS.run] if FLAGS.run else [])))
        return
    if not FLAGS.run:
        sys.exit("sr_convergence: --run: name a training run's folder")
    if not os.path.isfile(os.path.join(FLAGS.run, "config.json")):
        sys.exit(f"sr_convergence: --run: {FLAGS.run} has no config.json (not a training run)")
    watch(FLAGS.run)


if __name__ == "__main__":
    app.run(main)
