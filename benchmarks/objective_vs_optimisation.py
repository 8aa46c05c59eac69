"""How many Gatys iterations is the trained network worth? The paper's quality claim, measured.

    python benchmarks/objective_vs_optimisation.py [--model=starry_night] [--image_size=256]

For held-out content images (none of them among the training photos; checked byte for byte), the
objective value (content + style + TV; by default training's default weights and layers, which
the shipped starry_night model was trained with; pass the objective flags for another model) of the
feed-forward network's output, against the value the Gatys optimiser reaches after 25, 50, 100,
200 and 500 L-BFGS iterations from white noise on the same objective. The paper found its
networks worth about 50 to 100 iterations. Gatys runs in float32 here (its best, not its fastest)
and every value is measured by the same float32 objective.

Writes the section "Objective: feed-forward vs optimisation" of docs/benchmarks.md, the plot
docs/images/objective_vs_optimisation.png and, for up to three of the bundled photos
(``skimage:NAME``), a strip docs/images/objective_vs_optimisation_examples.jpg
(content | network | Gatys 50 | Gatys 500).

Needs ``../shared/data`` (content photos, the style image, and the training photos to check
against) unless given other paths.
"""

from __future__ import annotations

import glob
import hashlib
import os
import sys

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
from kperceptual import cli  # noqa: E402

import numpy as np  # noqa: E402
from absl import app, flags  # noqa: E402

from benchmarks import plot, report  # noqa: E402
from kperceptual import config as config_lib  # noqa: E402
from kperceptual import gatys, images, loss_network, models  # noqa: E402

CHECKPOINTS = (25, 50, 100, 200, 500)
DOCS = os.path.join(report.REPO, "docs")

flags.DEFINE_string("model", "starry_night", "Style network: a name in savedmodels/, a "
                                             "SavedModel folder or a .keras file.")
flags.DEFINE_list("content", sorted(glob.glob(os.path.join(report.SHARED_DATA, "content", "*")))
                  + ["skimage:astronaut", "skimage:coffee"],
                  "Held-out content images (files or skimage:NAME).")
flags.DEFINE_string("style", os.path.join(report.SHARED_DATA, "styles", "starry_night.jpg"),
                    "The style image the model was trained on.")
flags.DEFINE_integer("style_size", 256, "The style image's long side in training.")
flags.DEFINE_string("train_data", os.path.join(report.SHARED_DATA, "train"),
                    "The model's training photos; no content image may be among them.")
flags.DEFINE_integer("image_size", 256, "Content images are centre-cropped to this square.")
flags.DEFINE_integer("iterations", max(CHECKPOINTS), "L-BFGS iterations per image.")
cli.define_objective_flags()  # the model's training objective: the defaults unless told
FLAGS = flags.FLAGS


def _digest(path: str) -> str:
    with open(path, "rb") as f:
        return hashlib.sha256(f.read()).hexdigest()


def check_held_out(contents, train_data: str) -> None:
    if not os.path.isdir(train_data):
        sys.exit(f"objective_vs_optimisation: {train_data}: no such folder; the benchmark "
                 "checks that no content image is a training photo (pass --train_data)")
    seen = {_digest(p) for p in images.list_images(train_data)}
    for path in contents:
        if not path.startswith(images.SKIMAGE_PREFIX) and _digest(path) in seen:
            sys.exit(f"objective_vs_optimisation: {path}: is one of the training photos in "
                     f"{train_data}; choose held-out images")


def worth(history, target: float):
    """The first iteration at which Gatys's objective is at or below ``target`` (None: never)."""
    for row in history:
        if row["total"] <= target:
            return row["iteration"]
    return None


def main(argv):
    del argv
    missing = [p for p in FLAGS.content + [FLAGS.style]
               if not p.startswith(images.SKIMAGE_PREFIX) and not os.path.isfile(p)]
    if missing or not FLAGS.content:
        sys.exit(f"objective_vs_optimisation: {', '.join(missing) or '--content'}: no such "
                 "file; put ../shared/data beside the repository or pass --content/--style")
    check_held_out(FLAGS.content, FLAGS.train_data)
    objective_config = cli.config_from_flags(config_lib.ObjectiveConfig)
    config_lib.validate_objective(objective_config)
    model = models.load_model(FLAGS.model)
    name, model_fn = model.name, model.fn
    style = images.resize_long_side(images.read_image(FLAGS.style), FLAGS.style_size)
    loss_net = loss_network.LossNetwork(objective_config.loss_layers(),
                                        weights=objective_config.vgg_weights)
    checkpoints = [c for c in CHECKPOINTS if c <= FLAGS.iterations]
    rows, series, strips, ratios = [], {}, [], []
    for path in FLAGS.content:
        label = os.path.splitext(os.path.basename(path.split(":", 1)[-1]))[0]
        content = images.resize_and_center_crop(images.read_image(path), FLAGS.image_size)
        network_output = images.to_uint8(model_fn(content[None].astype(np.float32))[0])
        objective = gatys.PixelObjective(content, style, objective_config, loss_net)
        network = objective(network_output)["total"]
        snapshots = {}

        def keep(iteration, terms, image, snapshots=snapshots):
            if iteration in (50, FLAGS.iterations):
                snapshots[iteration] = images.to_uint8(image)

        _, history, _, stopped = gatys.minimize_lbfgs(
            objective, gatys.initial_image(content, "noise", seed=0), FLAGS.iterations,
            callback=keep)
        totals = {c: history[c]["total"] for c in checkpoints if c < len(history)}
        at = worth(history, network)
        rows.append(f"| {label} | {network:.2f} | "
                    + " | ".join(f"{totals[c]:.2f}" if c in totals else "-" for c in checkpoints)
                    + f" | {at if at is not None else f'> {len(history) - 1}'} |")
        print(rows[-1], stopped, flush=True)
        series[label] = [(row["iteration"], row["total"] / network) for row in history[1:]]
        ratios.append([totals[c] / network if c in totals else np.nan for c in checkpoints])
        # Only bundled photos go into the strip: ../shared's data stays out of the repository.
        if (path.startswith(images.SKIMAGE_PREFIX) and len(strips) < 3 and 50 in snapshots
                and FLAGS.iterations in snapshots):
            strips.append(np.concatenate([content, network_output, snapshots[50],
                                          snapshots[FLAGS.iterations]], axis=1))
    mean_ratio = np.nanmean(np.array(ratios), axis=0)  # NaN: a run that stopped early
    os.makedirs(os.path.join(DOCS, "images"), exist_ok=True)
    plot.log_log_chart(
        os.path.join(DOCS, "images", "objective_vs_optimisation.png"), series,
        f"Gatys L-BFGS objective / objective of the {name} network's output "
        f"({FLAGS.image_size}x{FLAGS.image_size}, held-out photos)",
        "L-BFGS iterations (from white noise)", "objective / network's", hline=1.0,
        hline_label="network output")
    if strips:
        images.write_image(os.path.join(DOCS, "images", "objective_vs_optimisation_examples.jpg"),
                           np.concatenate(strips, axis=0), overwrite=True)
    body = "\n".join([
        f"Objective (weighted content + style + TV; content {objective_config.content_weight:g}, "
        f"style {objective_config.style_weight:g} ({objective_config.style_reduction} over Gram "
        f"entries), TV {objective_config.tv_weight:g}; layers "
        f"{', '.join(objective_config.content_layers)} / "
        f"{', '.join(objective_config.style_layers)}) of the `{name}` network's output, and of "
        f"the Gatys optimiser (L-BFGS-B from white noise, float32) after N iterations, on "
        f"{FLAGS.image_size}x{FLAGS.image_size} centre crops of held-out photos. Lower is "
        "better. The last column is the first iteration at which Gatys reaches the network's "
        "value: what the network is worth.",
        "",
        "| content | network | " + " | ".join(f"Gatys {c}" for c in checkpoints)
        + " | Gatys matches the network at |",
        "|---|---|" + "---|" * len(checkpoints) + "---|",
        *rows,
        "",
        "Mean of Gatys / network over the images: "
        + ", ".join(f"{c} iterations {r:.2f}" for c, r in zip(checkpoints, mean_ratio)) + ".",
        "",
        "Plot: `docs/images/objective_vs_optimisation.png`; examples on the bundled photos "
        "(content | network | "
        "Gatys 50 | Gatys 500): `docs/images/objective_vs_optimisation_examples.jpg`.",
        "The paper: its networks score about as well as 50 to 100 L-BFGS iterations.",
    ])
    report.write_section("Objective: feed-forward vs optimisation", body, sys.argv)


if __name__ == "__main__":
    app.run(main)
