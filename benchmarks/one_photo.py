"""Can the transformation network reach Gatys's 100 iterations at all? Train it on ONE photo (or
a few) and score it on them: a bound on what the network's function class and its training
reach, apart from generalising over many photos.

    python benchmarks/one_photo.py --model=starry_night --steps=600 --iterations=100
    python benchmarks/one_photo.py --model=zoo --styles=candy --content=skimage:coffee \
        --iterations=100
    python benchmarks/one_photo.py --model=starry_night --trained=4 --image_size=128 \
        --content=PHOTO1,PHOTO2,PHOTO3,PHOTO4,HELD_OUT --iterations=100

Starts from ``--model`` (a shipped name, a SavedModel folder with its Keras network, or a
``.keras`` file; a multi-style network fixed to the one style in ``--styles``), then trains
every weight with Adam on the first ``--trained`` (default 1) ``--content`` photos alone
(their ``--image_size`` centre crops, ``--batch_size`` of them a step in turn, the whole image
scored, no border margin) for ``--steps`` steps, on the objective the model was trained with
(the objective flags, as ``objective_vs_optimisation.py``). Every ``--score_every`` steps it
prints the trained photos' mean objective, what each is worth, and, for the other
``--content`` photos (held out from this training too), their objectives: what the network
gains on its photos against what it loses on the others, and, as ``--trained`` grows, how
much of the one-photo fit a network keeps for several. Gatys's L-BFGS on each trained photo
(from noise, float32, the same cache as ``objective_vs_optimisation.py``) gives the iterations
each value is worth.

Training here uses a TensorFlow ``GradientTape`` (TensorFlow only; the network and objective
are the project's own). Writes the section "Objective: one photo, trained on" (or "N photos")
of docs/benchmarks.md (``--nowrite``: print only).
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

flags.DEFINE_integer("steps", 600, "Adam steps on the trained photos.")
flags.DEFINE_integer("trained", 1, "Train on the first N --content photos (the rest are held "
                     "out): how the fit on them falls as N grows.")
flags.DEFINE_integer("batch_size", 4, "Trained photos a step (at most --trained), in turn.")
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
    if not 1 <= FLAGS.trained <= len(FLAGS.content):
        sys.exit(f"one_photo: --trained={FLAGS.trained}: must be 1 to the number of --content "
                 f"photos ({len(FLAGS.content)})")
    if FLAGS.batch_size < 1:
        sys.exit(f"one_photo: --batch_size={FLAGS.batch_size}: must be at least 1")
    network, label, style_path = network_and_style(FLAGS.model, FLAGS.styles)
    # "Not trained on" means it: no photo may be one of the model's training photos.
    ovo.check_inputs(FLAGS.content, [style_path], FLAGS.train_data, "one_photo")
    objective_config, loss_net = ovo.objective_and_loss_network()
    style = ovo.read_style(style_path)
    photos = []  # (label, content crop, its PixelObjective)
    for path in FLAGS.content:
        content = images.resize_and_center_crop(images.read_image(path), FLAGS.image_size)
        photos.append((images.image_stem(path), content,
                       gatys.PixelObjective(content, style, objective_config, loss_net)))
    trained, held_out = photos[:FLAGS.trained], photos[FLAGS.trained:]
    # The same runs (and cache entries) as objective_vs_optimisation.py makes for these photos.
    histories = [ovo.gatys_run(c, style, objective_config, o, (50, FLAGS.iterations))[0]
                 for _, c, o in trained]
    objective = trained[0][2].objective  # one style: the same objective for every photo
    pixels = tf.constant(np.stack([c for _, c, _ in trained]).astype(np.float32))
    targets = {k: tf.concat([o.content_targets[k] for _, _, o in trained], 0)
               for k in trained[0][2].content_targets}  # each photo's, computed once
    batch = min(FLAGS.batch_size, len(trained))
    optimizer = keras.optimizers.Adam(FLAGS.learning_rate)
    variables = network.trainable_variables

    @tf.function
    def step(first):  # the trained photos in turn, ``batch`` of them a step
        rows = (first + tf.range(batch)) % len(trained)
        with tf.GradientTape() as tape:
            terms = objective(network(tf.gather(pixels, rows), training=True),
                              {k: tf.gather(v, rows) for k, v in targets.items()})
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
            totals = [t["total"] for t in terms[:len(trained)]]
            best = np.mean(totals) if best is None else min(best, np.mean(totals))
            worths = [ovo.worth_label(h, t) for h, t in zip(histories, totals)]
            rows.append(f"| {done} | {time.perf_counter() - started:.0f} | "
                        f"{np.mean(totals):.2f} | "
                        f"{np.mean([t['style'] for t in terms[:len(trained)]]):.2f} | "
                        f"{' / '.join(worths)} |"
                        + "".join(f" {t['total']:.2f} |" for t in terms[len(trained):]))
            print(rows[-1], flush=True)
        if done < FLAGS.steps:
            step(tf.constant(done * batch, tf.int32))
    names = ", ".join(n for n, _, _ in trained)
    gatys_at = {c: np.nanmean([h[c]["total"] if len(h) > c else np.nan for h in histories])
                for c in (50, 100)}  # NaN: a run that stopped before
    body = "\n".join([
        f"The `{FLAGS.model}` network ({label}) trained with Adam ({FLAGS.learning_rate:g}) on "
        + (f"{len(trained)} photos, {batch} of them a step in turn, " if len(trained) > 1
           else "one photo, ")
        + f"{names} ({FLAGS.image_size}x{FLAGS.image_size} centre crops, no border margin), "
        "scored on them and on other photos it never saw; Gatys's L-BFGS from noise on the "
        f"same photos: {gatys_at[50]:.2f} after 50 iterations, {gatys_at[100]:.2f} after 100 "
        "(means). Lower is better; \"worth\" (each trained photo's) as in \"Objective: "
        "feed-forward vs optimisation\".",
        "",
        "| steps | seconds | objective, mean over the trained photos | its style term | worth "
        "(L-BFGS iterations) |" + "".join(f" {n} (not trained on) |" for n, _, _ in held_out),
        "|---|---|---|---|---|" + "---|" * len(held_out),
        *rows,
        "",
        f"Best mean on the trained photos: {best:.2f}.",
    ])
    if FLAGS.write:
        title = ("Objective: one photo, trained on" if len(trained) == 1
                 else f"Objective: {len(trained)} photos, trained on")
        report.write_section(title, body, sys.argv)
    else:
        print(body)


if __name__ == "__main__":
    app.run(main)
