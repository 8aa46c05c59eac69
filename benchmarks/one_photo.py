"""Can the transformation network reach Gatys's 100 iterations at all? Train it on ONE photo and
score it on that photo: a bound on what the network's function class and its training reach,
apart from generalising over photos.

    python benchmarks/one_photo.py --model=starry_night --steps=600 --iterations=100
    python benchmarks/one_photo.py --model=zoo --styles=candy --content=skimage:coffee \
        --iterations=100

Starts from ``--model`` (a shipped name, a SavedModel folder with its Keras network, or a
``.keras`` file; a multi-style network fixed to the one style in ``--styles``), then trains
every weight with Adam on the first ``--content`` photo alone (its ``--image_size`` centre
crop, the whole image scored, no border margin) for ``--steps`` steps, on the objective the
model was trained with (the objective flags, as ``objective_vs_optimisation.py``). Every
``--score_every`` steps it prints that photo's objective and, for the other ``--content``
photos (held out from this training too), theirs: what the network gains on its photo against
what it loses on the others. Gatys's L-BFGS on the same photo (from noise, float32, the same
cache as ``objective_vs_optimisation.py``) gives the iterations each value is worth.

Training here uses a TensorFlow ``GradientTape`` (TensorFlow only; the network and objective
are the project's own). Writes the section "Objective: one photo, trained on" of
docs/benchmarks.md (``--nowrite``: print only).
"""

from __future__ import annotations

import os
import sys
import time

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
from benchmarks import objective_vs_optimisation as ovo  # noqa: E402  (its flags too)

import numpy as np  # noqa: E402
from absl import app, flags  # noqa: E402

from benchmarks import report  # noqa: E402
from kperceptual import networks  # noqa: E402
from kperceptual.gatys import optimizer as gatys  # noqa: E402
from kperceptual.imaging import images  # noqa: E402
from kperceptual.inference import loading as models  # noqa: E402
from kperceptual.inference import stylizer as inference  # noqa: E402

flags.DEFINE_integer("steps", 600, "Adam steps on the one photo.")
flags.DEFINE_float("learning_rate", 1e-3, "Adam's learning rate.")
flags.DEFINE_integer("score_every", 100, "Score the photos every N steps.")
FLAGS = flags.FLAGS


def network_and_style(spec: str, styles):
    """(the one-style Keras network to train, its style label, its style image path)."""
    model = models.load_model(spec)
    if model.network is None:
        sys.exit(f"one_photo: {spec}: has no Keras network to train (a .tflite file?)")
    names = inference.model_style_names(model)
    if not names:
        return model.network, model.name, FLAGS.style
    if len(styles) != 1 or styles[0] not in names:
        sys.exit(f"one_photo: --styles: name one of {spec}'s styles: {', '.join(names)}")
    weights = networks.style_weights(names, styles[0])
    return (networks.bind_style(model.network, weights), styles[0],
            os.path.join(FLAGS.styles_dir, f"{styles[0]}.jpg"))


def main(argv):
    del argv
    import keras
    import tensorflow as tf  # TensorFlow only: the training loop below

    if FLAGS.score_every < 1:
        sys.exit(f"one_photo: --score_every={FLAGS.score_every}: must be at least 1")
    ovo.check_held_out(FLAGS.content, FLAGS.train_data, "one_photo")  # "not trained on" means it
    network, label, style_path = network_and_style(FLAGS.model, FLAGS.styles)
    objective_config, loss_net = ovo.objective_and_loss_network()
    style = ovo.read_style(style_path)
    photos = []  # (label, content crop, its PixelObjective)
    for path in FLAGS.content:
        content = images.resize_and_center_crop(images.read_image(path), FLAGS.image_size)
        photos.append((ovo.photo_label(path), content,
                       gatys.PixelObjective(content, style, objective_config, loss_net)))
    trained_name, trained, objective = photos[0]
    # The same run (and cache entry) as objective_vs_optimisation.py makes for this photo.
    history, _, _ = ovo.gatys_run(trained, style, objective_config, objective,
                                  (50, FLAGS.iterations))
    x = tf.constant(trained[None].astype(np.float32))
    optimizer = keras.optimizers.Adam(FLAGS.learning_rate)
    variables = network.trainable_variables

    @tf.function
    def step():
        with tf.GradientTape() as tape:
            terms = objective.objective(network(x, training=True), objective.content_targets)
            loss = tf.reduce_mean(terms["total"])
        optimizer.apply_gradients(zip(tape.gradient(loss, variables), variables))

    def scores():
        outputs = [images.to_uint8(np.asarray(network(c[None].astype(np.float32)))[0])
                   for _, c, _ in photos]
        return [obj(out) for (_, _, obj), out in zip(photos, outputs)]

    rows, best = [], None
    started = time.perf_counter()
    for done in range(FLAGS.steps + 1):
        if done % FLAGS.score_every == 0 or done == FLAGS.steps:
            terms = scores()
            total = terms[0]["total"]
            best = total if best is None else min(best, total)
            rows.append(f"| {done} | {time.perf_counter() - started:.0f} | {total:.2f} | "
                        f"{terms[0]['style']:.2f} | "
                        f"{ovo.worth_label(history, total)} |"
                        + "".join(f" {t['total']:.2f} |" for t in terms[1:]))
            print(rows[-1], flush=True)
        if done < FLAGS.steps:
            step()
    gatys_at = {c: history[c]["total"] for c in (50, 100) if c < len(history)}
    body = "\n".join([
        f"The `{FLAGS.model}` network ({label}) trained with Adam ({FLAGS.learning_rate:g}) on "
        f"one photo, {trained_name} ({FLAGS.image_size}x{FLAGS.image_size} centre crop, no "
        "border margin), scored on it and on other photos it never saw; Gatys's L-BFGS from "
        f"noise on {trained_name}: {gatys_at.get(50, float('nan')):.2f} after 50 iterations, "
        f"{gatys_at.get(100, float('nan')):.2f} after 100 (style term "
        f"{history[min(100, len(history) - 1)]['style']:.2f}). Lower is better; \"worth\" as "
        "in \"Objective: feed-forward vs optimisation\".",
        "",
        f"| steps | seconds | objective on {trained_name} | its style term | worth (L-BFGS "
        "iterations) |" + "".join(f" {n} (not trained on) |" for n, _, _ in photos[1:]),
        "|---|---|---|---|---|" + "---|" * (len(photos) - 1),
        *rows,
        "",
        f"Best on {trained_name}: {best:.2f}.",
    ])
    if FLAGS.write:
        report.write_section("Objective: one photo, trained on", body, sys.argv)
    else:
        print(body)


if __name__ == "__main__":
    app.run(main)
