"""Writes docs/<name>.md for a trained style model: content | stylised pairs and the loss curve.

    python docs/make_model_page.py --name=starry_night [--model_dir=runs/starry_night]
    python docs/make_model_page.py --name=zoo --mix=starry_night,wave   # a multi-style network

A multi-style network gets a gallery instead (a row per photo: the photo, then each style in the
network's order) and a style-mixing strip between the two ``--mix`` styles.

The content photos are scikit-image's bundled CC0 / public-domain photos, none of which is in the
training folders, so the pairs show held-out images. The outputs come from the exported
SavedModel (savedmodels/<name>/<newest version>), the file users get; the loss table is read from
the run's TensorBoard logs.
"""

from __future__ import annotations

import glob
import json
import os
import sys

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, REPO)
from kperceptual import cli  # noqa: E402,F401

import numpy as np  # noqa: E402
from absl import app, flags  # noqa: E402

from kperceptual.serving import layout  # noqa: E402
from kperceptual.imaging import images
from kperceptual.inference import stylizer as inference
from kperceptual.inference import loading as models

flags.DEFINE_string("name", "starry_night", "Model name (under savedmodels/ and runs/).")
flags.DEFINE_string("model_dir", "", "The training run's folder; default runs/NAME.")
flags.DEFINE_string("title", "", "Page title; default the name.")
flags.DEFINE_list("photos", ["chelsea", "astronaut", "coffee", "rocket"], "Bundled photos.")
flags.DEFINE_integer("size", 320, "Long side of the example images.")
flags.DEFINE_list("mix", [], "Multi-style networks: two styles for the mixing strip (default: "
                              "the first two).")
flags.DEFINE_string("flagfile_name", "", "The pipelines/ flagfile; default NAME.flags.")
FLAGS = flags.FLAGS


def loss_rows(log_dir: str, rows: int = 12):
    import tensorflow as tf

    series = {}
    for path in sorted(glob.glob(os.path.join(log_dir, "events.out.tfevents.*"))):
        for event in tf.compat.v1.train.summary_iterator(path):
            for value in event.summary.value:
                if not value.HasField("tensor"):
                    continue
                array = tf.make_ndarray(value.tensor)
                if array.ndim == 0 and array.dtype.kind == "f":  # scalars, not sample images
                    series.setdefault(value.tag, {})[event.step] = float(array)
    logged = sorted(series.get("loss", {}))
    picks = sorted({logged[round(i * (len(logged) - 1) / (rows - 1))] for i in range(rows)}
                   if len(logged) > rows else logged)
    for step in picks:
        yield step, {k: series[k].get(step, float("nan")) for k in
                     ("loss", "content_loss", "style_loss", "tv_loss", "seconds_per_step")}


def main(argv):
    del argv
    name = FLAGS.name
    model_dir = FLAGS.model_dir or os.path.join(REPO, "runs", name)
    version_path = layout.latest_version_path(os.path.join(REPO, "savedmodels"), name)
    if version_path is None:
        sys.exit(f"make_model_page: no savedmodels/{name}/<version>; train and export it first")
    model = models.load_model(version_path)
    styles = inference.model_style_names(model)
    white = lambda h, w: np.full((h, w, 3), 255, np.uint8)  # noqa: E731
    rows, mix_text = [], ""
    for photo in FLAGS.photos:
        content = images.resize_long_side(images.skimage_photo(photo), FLAGS.size)
        outputs = ([inference.stylize_image(inference.bind_model_style(model, s), content)
                    for s in styles] if styles else [inference.stylize_image(model, content)])
        row = [content]
        for output in outputs:
            row += [white(content.shape[0], 8), output]
        rows.append(np.concatenate(row, axis=1))
    if styles:
        a, b = (FLAGS.mix or list(styles[:2]))[:2]
        content = images.resize_long_side(images.skimage_photo(FLAGS.photos[0]), FLAGS.size)
        strip = []
        for w in (1.0, 0.75, 0.5, 0.25, 0.0):
            mix = f"{a}:{w},{b}:{1 - w}"
            strip += [inference.stylize_image(inference.bind_model_style(model, mix), content),
                      white(content.shape[0], 8)]
        mix_path = os.path.join(REPO, "docs", "images", f"{name}_mixing.jpg")
        images.write_image(mix_path, np.concatenate(strip[:-1], axis=1), overwrite=True)
        mix_text = (f"\nMixing two styles (`--style={a}:W,{b}:1-W`, the per-style scales and "
                    f"shifts interpolated), W = 1, 0.75, 0.5, 0.25, 0:\n\n"
                    f"![style mixing](images/{name}_mixing.jpg)\n")
    width = max(r.shape[1] for r in rows)
    rows = [np.pad(r, ((0, 8), (0, width - r.shape[1]), (0, 0)), constant_values=255)
            for r in rows]
    image_path = os.path.join(REPO, "docs", "images", f"{name}_examples.jpg")
    os.makedirs(os.path.dirname(image_path), exist_ok=True)
    images.write_image(image_path, np.concatenate(rows, axis=0), overwrite=True)

    with open(os.path.join(model_dir, "config.json")) as f:
        config = json.load(f)
    table = ["| step | total | content | style | TV | s/step |", "|---|---|---|---|---|---|"]
    for step, v in loss_rows(os.path.join(model_dir, "logs")):
        table.append(f"| {step} | {v['loss']:.2f} | {v['content_loss']:.2f} | "
                     f"{v['style_loss']:.2f} | {v['tv_loss']:.3f} | {v['seconds_per_step']:.2f} |")
    last_step = int(table[-1].split("|")[1]) if len(table) > 2 else 0
    flagfile = FLAGS.flagfile_name or f"{name}.flags"
    held_out = "" if config["train_data"] == "skimage" else ", none of them in the training set"
    page = f"""# {FLAGS.title or name}

- Model: `savedmodels/{name}/{os.path.basename(version_path)}` (SavedModel, TF Serving layout).
- Trained with `python -m kperceptual.train --flagfile=pipelines/{flagfile}` for
  **{last_step} steps** (the paper: 40,000 on 80k COCO images).
- Training photos: `{config['train_data']}`; {config['image_size']}x{config['image_size']} crops,
  batch {config['batch_size']}; style image long side {config['style_size']}.
- Loss: content weight {config['content_weight']:g}, style weight {config['style_weight']:g}
  ({config['style_reduction']} over Gram entries), TV weight {config['tv_weight']:g}.
- Network: {config['norm']} normalisation, {config['upsample']} upsampling,
  {config['padding']} padding.

Left: content photo (scikit-image's bundled photos{held_out}). Right: the exported model's
output{", one column per style: " + ", ".join(styles) if styles else ""}; made by
`python docs/make_model_page.py --name={name}`.

![content and stylised pairs](images/{name}_examples.jpg)
{mix_text}
Training losses (weighted terms, averaged over the {config['log_every']} steps before each row;
from the run's TensorBoard logs):

{chr(10).join(table)}
"""
    with open(os.path.join(REPO, "docs", f"{name}.md"), "w") as f:
        f.write(page)
    print(f"wrote docs/{name}.md and {os.path.relpath(image_path, REPO)}")


if __name__ == "__main__":
    app.run(main)
