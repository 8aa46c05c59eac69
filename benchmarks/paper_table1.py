"""The paper's Table 1 on this machine: Gatys optimisation vs one feed-forward pass.

    python benchmarks/paper_table1.py [--model=starry_night] [--sizes=256,512,1024]

For each square size: the time of 100, 300 and 500 L-BFGS iterations of the Gatys optimiser
(``kperceptual.gatys``, default precision) and of one feed-forward pass of the trained style
network (its SavedModel, as ``kperceptual.stylize`` runs it), all in one run so that the ratios
hold on a noisy machine. Where a size's ``--measure`` count is below 500, the longer cells are
extrapolated from the measured seconds per iteration (over at least 10 iterations) and marked.
Writes the section "Paper Table 1" of docs/benchmarks.md.

Needs the trained model (``savedmodels/starry_night``, in the repository) and a content and a
style image, by default ``../shared/data/content/tubingen.jpg`` and
``../shared/data/styles/starry_night.jpg``; times do not depend on which images they are.
"""

from __future__ import annotations

import os
import sys

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
from kperceptual import cli  # noqa: E402,F401

import numpy as np  # noqa: E402
from absl import app, flags  # noqa: E402

from benchmarks import report  # noqa: E402
from kperceptual.gatys import optimizer as gatys  # noqa: E402
from kperceptual.imaging import images
from kperceptual.inference import loading as models
from kperceptual.config import ObjectiveConfig  # noqa: E402
from kperceptual.networks.precision import dtype_policy, resolve_precision  # noqa: E402

ITERATIONS = (100, 300, 500)
PAPER = {  # seconds on a GTX Titan X (Gatys 100 / 300 / 500 iterations, feed-forward), speed-ups
    256: (3.17, 9.52, 15.86, 0.015, "212x / 636x / 1060x"),
    512: (10.97, 32.91, 54.85, 0.05, "205x / 615x / 1026x"),
    1024: (42.89, 128.66, 214.44, 0.21, "208x / 625x / 1042x"),
}

flags.DEFINE_string("model", "starry_night", "Style network: a name in savedmodels/, a "
                                             "SavedModel folder or a .keras file.")
flags.DEFINE_string("content", os.path.join(report.SHARED_DATA, "content", "tubingen.jpg"),
                    "Content image (centre-cropped to each size).")
flags.DEFINE_string("style", os.path.join(report.SHARED_DATA, "styles", "starry_night.jpg"),
                    "Style image (long side --style_size).")
flags.DEFINE_integer("style_size", 256, "The style image's long side (the model's training "
                                        "value).")
flags.DEFINE_list("sizes", ["256", "512", "1024"], "Square image sizes.")
flags.DEFINE_list("measure", ["500", "100", "20"],
                  "L-BFGS iterations actually run per size (>= 10); longer cells are "
                  "extrapolated from these.")
flags.DEFINE_integer("forward_runs", 10, "Timed feed-forward passes per size (median).")
flags.DEFINE_string("precision", "auto", "The Gatys optimiser's precision.")
FLAGS = flags.FLAGS


def gatys_seconds(content, style, measure: int, precision: str) -> tuple[dict, float, str]:
    """{iterations: (seconds, extrapolated?)} for ``ITERATIONS``, seconds per iteration, and how
    L-BFGS stopped."""
    with dtype_policy(precision):
        objective = gatys.PixelObjective(content, style, ObjectiveConfig())
    objective.value_and_grad(content)  # compile outside the clock
    start = gatys.initial_image(content, "noise", seed=0)
    _, history, _, stopped = gatys.minimize_lbfgs(objective, start, measure)
    done = len(history) - 1  # fewer than measure where L-BFGS could not go on
    if done < 10:
        raise RuntimeError(f"L-BFGS stopped after {done} iterations ({stopped}); too few to time")
    if done < measure:
        stopped = f"stopped after {done} of {measure} iterations: {stopped}"
        measure = done
    seconds = [row["seconds"] for row in history]
    per_iteration = (seconds[measure] - seconds[1]) / (measure - 1)  # steady state
    cells = {}
    for n in ITERATIONS:
        cells[n] = ((seconds[n], False) if n <= measure else
                    (seconds[measure] + (n - measure) * per_iteration, True))
    return cells, per_iteration, stopped


def main(argv):
    del argv
    for path in (FLAGS.content, FLAGS.style):
        if not os.path.isfile(path):
            sys.exit(f"paper_table1: {path}: no such file; put ../shared/data beside the "
                     "repository or pass --content/--style")
    sizes = [int(s) for s in FLAGS.sizes]
    measures = [int(m) for m in FLAGS.measure]
    if len(measures) != len(sizes) or min(measures) < 10:
        sys.exit("paper_table1: --measure: give one count >= 10 per size")
    model = models.load_model(FLAGS.model)
    name, model_fn = model.name, model.fn
    precision = resolve_precision(FLAGS.precision)
    photo, style_photo = images.read_image(FLAGS.content), images.read_image(FLAGS.style)
    style = images.resize_long_side(style_photo, FLAGS.style_size)
    rows, paper_rows, notes = [], [], []
    for size, measure in zip(sizes, measures):
        content = images.resize_and_center_crop(photo, size)
        forward = report.median_seconds(model_fn, content[None].astype(np.float32),
                                       FLAGS.forward_runs)
        cells, per_iteration, stopped = gatys_seconds(content, style, measure, precision)
        if "restart" in stopped or "stopped after" in stopped:
            notes.append(f"At {size}x{size} L-BFGS-B stopped early (the bfloat16 objective "
                         f"stopped going down) and was restarted from where it stood: "
                         f"{stopped.lower()}. Cells past the last iteration are extrapolated.")
        times = " | ".join(f"{s:.2f}{'*' if extrapolated else ''}"
                           for s, extrapolated in cells.values())
        speedups = " / ".join(f"{s / forward:,.0f}x" for s, _ in cells.values())
        rows.append(f"| {size}x{size} | {times} | {forward:.3f} | {speedups} | "
                    f"{per_iteration:.3f} |")
        print(rows[-1], flush=True)
        if size in PAPER:
            p = PAPER[size]
            paper_rows.append(f"| {size}x{size} | {' | '.join(map(str, p[:4]))} | {p[4]} |")
    body = "\n".join([
        f"Seconds per image. Gatys: `kperceptual.gatys` L-BFGS-B from white noise, "
        f"precision {precision}, content + style + TV objective (relu2_2; relu1_2, relu2_2, "
        f"relu3_3, relu4_3), style image {style.shape[1]}x{style.shape[0]}; the clock starts "
        "after compilation. Feed-forward: one image through the `" + name + "` SavedModel "
        f"(float32, as `kperceptual.stylize` runs it), median of {FLAGS.forward_runs} after 2 "
        "warm-up passes. Cells marked * are extrapolated from the measured seconds per "
        f"iteration (iterations actually run: {', '.join(map(str, measures))} for sizes "
        f"{', '.join(map(str, sizes))}); the others are measured.",
        "",
        "| size | Gatys 100 | Gatys 300 | Gatys 500 | feed-forward | speed-up (100 / 300 / 500) "
        "| s per L-BFGS iteration |",
        "|---|---|---|---|---|---|---|",
        *rows,
        "",
        *(notes + [""] if notes else []),
        "The paper (GTX Titan X, Torch), for comparison:",
        "",
        "| size | Gatys 100 | Gatys 300 | Gatys 500 | feed-forward | speed-up (100 / 300 / 500) |",
        "|---|---|---|---|---|---|",
        *paper_rows,
    ])
    report.write_section("Paper Table 1: optimisation vs feed-forward", body, sys.argv)


if __name__ == "__main__":
    app.run(main)
