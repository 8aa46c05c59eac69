"""Super-resolution results for docs/super_resolution.md: bicubic and the trained x4 and x8
models on Set5, Set14 and BSD100, next to the paper's numbers.

    python benchmarks/super_resolution.py                      # all sets, both scales
    python benchmarks/super_resolution.py --sets=Set5 --scales=4

Needs ``../shared/data/sr/<set>/HR`` and ``LR_x4`` (x4 uses the benchmark's MATLAB-bicubic
LR_x4 files, as the paper; x8 has no LR set, so its inputs are made from HR with the paper's
degradation: blur sigma 1.0, bicubic /8) and the models in ``savedmodels/``. Runs
``kperceptual.evaluation`` (the same code as ``python -m kperceptual.evaluate``), keeps each
run's full report under ``eval/<set>_x<scale>/``, and writes the sections "Measured x4" and
"Measured x8" of
docs/super_resolution.md with the training steps each model had (from ``runs/<name>/``) and
comparison grids in docs/images/.
"""

from __future__ import annotations

import datetime
import os
import sys

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))

from absl import app, flags  # noqa: E402

import report  # noqa: E402

flags.DEFINE_list("sets", ["Set5", "Set14", "BSD100"], "Benchmark sets under ../shared/data/sr.")
flags.DEFINE_list("scales", ["4", "8"], "Scales to evaluate.")
flags.DEFINE_list("x4_models", ["bicubic", "sr_x4_pixel", "sr_x4_feat"], "Models for x4.")
flags.DEFINE_list("x8_models", ["bicubic", "sr_x8_pixel", "sr_x8_feat"], "Models for x8.")
flags.DEFINE_string("eval_dir", os.path.join(report.REPO, "eval"), "Full reports go here.")
flags.DEFINE_bool("write", True, "Write the section into docs/super_resolution.md.")
FLAGS = flags.FLAGS

DOC = os.path.join(report.REPO, "docs", "super_resolution.md")
# Johnson et al. (2016), Fig. 8: Set5 x4, PSNR / SSIM on the Y channel.
PAPER_SET5_X4 = {"bicubic": (28.43, 0.8114), "l_pixel": (28.40, 0.8205),
                 "l_feat": (27.09, 0.7680), "SRCNN": (30.48, 0.8628)}
PAPER_NAME = {"bicubic": "bicubic", "sr_x4_pixel": "l_pixel", "sr_x4_feat": "l_feat"}
CARDS = os.path.join(report.REPO, "docs", "models")
PIN_MAX = 0.001  # kperceptual.evaluation.metrics.PIN_MAX_FRACTION


def trained_steps(name: str) -> str:
    """The training steps of a shipped model, from its model card docs/models/<name>.md (the
    row "| steps | N |"), else from runs/<name>/checkpoints; '?' if neither says."""
    if name == "bicubic":
        return "-"
    card = os.path.join(CARDS, f"{name}.md")
    if os.path.isfile(card):
        with open(card) as f:
            for line in f:
                cells = [c.strip() for c in line.strip().strip("|").split("|")]
                if len(cells) >= 2 and cells[0] == "steps":
                    return cells[1]
    from kperceptual.training import checkpoints

    found = checkpoints.list_checkpoints(os.path.join(report.REPO, "runs", name, "checkpoints"))
    return f"{found[-1][0]:,}" if found else "?"


def pinned_and_grey(results, pairs, scale, model_specs) -> dict:
    """{model: (largest pinned region over the set's images as a fraction, (mean |Cb - 128|,
    mean |Cr - 128|) of the outputs for greyscale inputs, worst image), mean grid pattern in
    levels)}: the blob check (``metrics.largest_pinned_region`` against the high-res truth),
    the grey check and the lattice check (``metrics.grid_pattern``)."""
    import numpy as np
    from PIL import Image

    from kperceptual.evaluation import super_resolution as evaluation
    from kperceptual.evaluation import metrics

    checks = {}
    for spec in model_specs:
        name, upscale = evaluation.load_upscaler(spec, scale, models_dir=os.path.join(
            report.REPO, "savedmodels"))
        outputs = results[name]["outputs"]
        pinned = max(metrics.largest_pinned_region(outputs[p.name], p.high_res) for p in pairs)
        grey = [0.0, 0.0]
        for pair in pairs:
            low = np.asarray(Image.fromarray(pair.low_res).convert("L").convert("RGB"))
            offsets = metrics.mean_chroma_offset(upscale(low))
            grey = [max(a, b) for a, b in zip(grey, offsets)]
        grid = [metrics.grid_pattern(outputs[p.name], p.high_res, scale) for p in pairs
                if min(p.high_res.shape[:2]) >= metrics.GRID_WINDOW]
        checks[name] = (pinned, tuple(grey), float(np.mean(grid)) if grid else float("nan"))
    return checks


def run_set(name: str, scale: int, model_specs) -> tuple[dict, str]:
    from kperceptual.evaluation import super_resolution as evaluation

    root = os.path.join(report.SHARED_DATA, "sr", name)
    hr = os.path.join(root, "HR")
    lr = os.path.join(root, f"LR_x{scale}")
    if not os.path.isdir(hr):
        sys.exit(f"super_resolution: {hr} is missing (the benchmark sets come with ../shared)")
    lr = lr if os.path.isdir(lr) else None
    pairs = evaluation.load_pairs(hr, lr, scale)
    models = [m for m in model_specs if m == "bicubic" or
              os.path.isdir(os.path.join(report.REPO, "savedmodels", m))]
    results = evaluation.evaluate(models, pairs, scale,
                                  models_dir=os.path.join(report.REPO, "savedmodels"),
                                  progress=lambda line: print(line, file=sys.stderr))
    title = f"{name} x{scale}"
    evaluation.write_report(results, pairs, os.path.join(FLAGS.eval_dir, f"{name}_x{scale}"),
                            scale=scale, title=title, overwrite=True,
                            info={"hr": hr, "lr": lr, "blur_sigma": None if lr else 1.0})
    checks = pinned_and_grey(results, pairs, scale, models)
    for model, check in checks.items():
        results[model]["checks"] = check
    grid = evaluation.comparison_grid(results, pairs, scale, max_images=3)
    grid_path = os.path.join(report.REPO, "docs", "images", f"sr_{name.lower()}_x{scale}.jpg")
    from PIL import Image

    from kperceptual.imaging import files

    os.makedirs(os.path.dirname(grid_path), exist_ok=True)
    with files.atomic_path(grid_path) as tmp:
        Image.fromarray(grid).save(tmp, quality=90)
    source = "LR_x4 (MATLAB bicubic)" if lr else "HR blurred (sigma 1) and bicubic /8"
    grid_link = os.path.relpath(grid_path, os.path.dirname(DOC))
    return results, f"{title}: inputs {source}, {len(pairs)} images; crops: `{grid_link}`"


def table(all_results) -> str:
    lines = ["| set | scale | model | training steps | PSNR (dB) | SSIM | LPIPS | "
             "grid pattern (levels) | largest pinned region | grey input: Cb, Cr | "
             "paper PSNR / SSIM |",
             "|---|---|---|---|---|---|---|---|---|---|---|"]
    for (name, scale), results in all_results.items():
        for model, r in results.items():
            mean = r["mean"]
            paper = ""
            if name == "Set5" and scale == 4 and PAPER_NAME.get(model) in PAPER_SET5_X4:
                p = PAPER_SET5_X4[PAPER_NAME[model]]
                paper = f"{p[0]:.2f} / {p[1]:.4f}"
            pinned, (cb, cr), grid = r["checks"]
            flag = "" if pinned <= PIN_MAX else " (over the bar)"
            lines.append(f"| {name} | x{scale} | {model} | {trained_steps(model)} | "
                         f"{mean['psnr']:.2f} | {mean['ssim']:.4f} | {mean['lpips']:.4f} | "
                         f"{grid:.2f} | {100 * pinned:.3f}%{flag} | {cb:.2f}, {cr:.2f} | {paper} |")
    return "\n".join(lines)


def update_cards(all_results) -> None:
    """Replaces the "## Measured" section of each evaluated model's card docs/models/NAME.md
    (cards are started by benchmarks/sr_model_card.py) with its rows and bicubic's."""
    header, rule, *rows = table(all_results).splitlines()
    models = {r.split("|")[3].strip() for r in rows} - {"bicubic"}
    for model in models:
        card = os.path.join(CARDS, f"{model}.md")
        if not os.path.isfile(card):
            continue
        text = open(card).read()
        text = text[:text.index("## Measured")].rstrip("\n") if "## Measured" in text else \
            text.rstrip("\n")
        mine = [r for r in rows if r.split("|")[3].strip() in (model, "bicubic")
                and f"x{model.split('_')[1][1:]}" == r.split("|")[2].strip()]
        with open(card, "w") as f:
            f.write(f"{text}\n\n## Measured\n\n`python benchmarks/super_resolution.py` on "
                    f"{datetime.date.today().isoformat()}; the columns are explained in "
                    "[docs/super_resolution.md](../super_resolution.md).\n\n"
                    + "\n".join([header, rule] + mine) + "\n")


def main(argv):
    del argv
    every = {}
    for scale in (int(s) for s in FLAGS.scales):
        specs = {4: FLAGS.x4_models, 8: FLAGS.x8_models}.get(scale)
        if specs is None:
            sys.exit(f"super_resolution: --scales: {scale} has no model list (4 or 8)")
        all_results, notes = {}, []
        for name in FLAGS.sets:
            results, note = run_set(name, scale, specs)
            all_results[(name, scale)] = results
            notes.append(f"- {note}")
        body = (table(all_results) + "\n\nPSNR and SSIM on the BT.601 luma with `scale` pixels "
                "cropped from each border (`kperceptual.evaluation.metrics`), LPIPS (VGG, v0.1; lower is "
                "better) on RGB with the same crop. Grid pattern: the part of the luma error that repeats with the "
                "low-res pixel grid (`metrics.grid_pattern`: each sub-pixel phase's mean error "
                "in 64-pixel windows, less the window's; mean over the set's images), which a "
                "lattice texture raises and blur does not; bicubic's is the reference. "
                "The l_feat models' outputs are histogram-matched, as in the paper. The paper trained 200k steps; the steps column is what these models "
                "had. Largest pinned region: the largest connected area with a channel at 0 or "
                "255 where the truth is not near that value (`metrics.largest_pinned_region`, "
                f"worst image of the set; the bar is {100 * PIN_MAX:.1f}%). Grey input: the "
                "inputs as greyscale (their luma), and the outputs' mean |Cb - 128| and "
                "|Cr - 128| in levels (worst image; grey stays grey under 2)." + (f" Paper, Set5 x4: SRCNN {PAPER_SET5_X4['SRCNN'][0]:.2f} / "
                          f"{PAPER_SET5_X4['SRCNN'][1]:.4f}." if scale == 4 else "")
                + "\n\n" + "\n".join(notes))
        print(body)
        every.update(all_results)
        if FLAGS.write:
            report.write_section(f"Measured x{scale}", body, sys.argv, doc=DOC)
    if FLAGS.write:
        update_cards(every)


if __name__ == "__main__":
    app.run(main)
