"""Training speed on each Keras backend: seconds per step of the style network + VGG16 loss
(relu1_2..relu4_3) at 256x256, for each precision and compilation setting; and the input
pipelines' images per second (tf.data and keras.utils.PyDataset).

    python benchmarks/train_speed.py [--backends=tensorflow,jax,torch] [--batch_sizes=4]
        [--precisions=float32,mixed_bfloat16,mixed_float16] [--jit_compile=off,on] [--steps=5]
        [--train_data=../shared/data/train]

Each backend runs in its own process (Keras fixes its backend when first imported), on random
pixels held in memory, so only the step is timed. Writes its table into docs/benchmarks.md
(``--section``, default "Training speed"), with the machine it ran on; on TensorFlow also the
step's profile and a roofline of the transformation network (``--profile_section``, default
"Training step profile"). Runs without TensorFlow too (a GPU
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
flags.DEFINE_list("training_forward", ["on"], "TensorFlow: how training steps compute the "
                  "transformation network, timed each: on (networks.training_forward, what "
                  "training uses there), off (the network's own layers).")
flags.DEFINE_integer("image_size", 256, "Side of the square training images.")
flags.DEFINE_integer("steps", 5, "Timed steps per setting (after 2 warm-up steps).")
flags.DEFINE_integer("pipeline_batches", 40, "Timed input-pipeline batches of 4 (0: skip).")
flags.DEFINE_string("section", "Training speed", "The docs/benchmarks.md section to write.")
flags.DEFINE_string("profile_section", "Training step profile",
                    "The docs/benchmarks.md section the TensorFlow step profile goes to.")
flags.DEFINE_string("train_data", os.path.join(report.SHARED_DATA, "train"),
                    "Folder of real photos for the pipeline rates.")
flags.DEFINE_integer("timeout", 3600, "Seconds allowed for each backend's process.")
flags.DEFINE_bool("profile", True, "TensorFlow: also time the step's parts and this CPU's "
                  "best rate, with a roofline of the transformation network "
                  "(--profile_section).")
flags.DEFINE_bool("child", False, "Internal: time the settings on this process's backend.")
FLAGS = flags.FLAGS

WARMUP = 2
PAPER_STEPS = 40_000


def seconds_per_step(precision: str, jit: str, batch_size: int, forward: str = "on") -> float:
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
        t = trainer.build_trainer(config, jit_compile=choices.JIT_COMPILE[jit],
                                  training_forward=forward == "on")
        timer = StepTimes()
        t.fit(pixels, batch_size=batch_size, epochs=1, callbacks=[timer], verbose=0,
              shuffle=False)
    return float(np.median(np.diff(timer.times)[WARMUP:]))


def layer_calls(model, pixels):
    """Yields ``(layer, its input values, its output)`` for each layer call of ``model``'s graph
    on ``pixels`` (one example, the model's one input), in order."""
    import keras

    values = {id(model.inputs[0]): pixels}
    for depth in sorted(model._nodes_by_depth, reverse=True):
        for node in model._nodes_by_depth[depth]:
            layer = node.operation
            if not node.input_tensors or isinstance(layer, keras.layers.InputLayer):
                continue
            args = [values[id(t)] for t in node.input_tensors]
            out = layer(args[0] if len(args) == 1 else args)
            for tensor, value in zip(node.output_tensors, keras.tree.flatten(out)):
                values[id(tensor)] = value
            yield layer, args, out


def conv_macs(model, pixels) -> int:
    """Multiply-adds of ``model``'s 2-D convolutions on ``pixels`` (one example)."""
    import keras

    macs = 0
    for layer, args, out in layer_calls(model, pixels):
        if isinstance(layer, (keras.layers.Conv2D, keras.layers.Conv2DTranspose)):
            kh, kw = layer.kernel_size
            big = out if isinstance(layer, keras.layers.Conv2D) else args[0]
            macs += (int(big.shape[1]) * int(big.shape[2]) * kh * kw
                     * int(layer.kernel.shape[2]) * int(layer.kernel.shape[3]))
    return macs


# What the roofline part of the profile takes out of the transformation network: its
# normalisation layers and ReLUs, the layers between convolutions that do little arithmetic
# per byte they read and write.
ITEM_BYTES = {"bfloat16": 2, "float16": 2, "float32": 4, "float64": 8}
MEMORY_BOUND_LAYERS = ("GroupNormalization", "ConditionalInstanceNormalization",
                       "BatchNormalization", "ReLU")


def without_memory_bound_layers(model):
    """``model`` with every ``MEMORY_BOUND_LAYERS`` layer an identity (its first input passed
    on), sharing the other layers and their variables: the convolutions, padding and the rest
    as the model computes them."""
    import keras

    def call(layer, *args, **kwargs):
        if type(layer).__name__ in MEMORY_BOUND_LAYERS:
            x = args[0]
            return x[0] if isinstance(x, (list, tuple)) else x
        return layer(*args, **kwargs)

    return keras.models.clone_model(model, clone_function=lambda layer: layer,
                                    call_function=call)


def memory_bound_bytes(model, pixels) -> int:
    """Bytes the ``MEMORY_BOUND_LAYERS`` of ``model`` read and write in one forward pass on
    ``pixels`` (one example), each input and output counted once in its dtype: the least
    traffic they can cause (a layer that reads its input twice, or casts it, moves more)."""
    import keras

    total = 0
    for layer, args, out in layer_calls(model, pixels):
        if type(layer).__name__ in MEMORY_BOUND_LAYERS:
            for t in (args[0], out):
                dtype = keras.backend.standardize_dtype(t.dtype)
                total += int(np.prod(t.shape)) * ITEM_BYTES[dtype]
    return total


def median_seconds(fn, runs=5) -> float:
    fn()
    times = []
    for _ in range(runs):
        start = time.perf_counter()
        fn()
        times.append(time.perf_counter() - start)
    return float(np.median(times))


def step_profile(precision: str, batch_size: int, how: str = "on") -> dict:
    """TensorFlow: seconds of the step's parts (the transformation network forward, and forward
    and backward; the loss network's forward and backward from the output, with the Gram
    matrices; the content targets), the arithmetic of a step, and this CPU's best rate in
    bfloat16 and float32: the faster of a 4096x4096 matrix multiply and a 3x3 convolution of
    256 to 256 channels on 4 x 128 x 128 (what TensorFlow's kernels reach on it); and for the
    roofline (``roofline_lines``): the network's forward and backward without its
    ``MEMORY_BOUND_LAYERS``, those layers' bytes and this CPU's read bandwidth."""
    import tensorflow as tf

    from kperceptual import config as config_lib
    from kperceptual.losses.loss_network import preprocess
    from kperceptual.training import trainer

    config = config_lib.StyleTrainingConfig(style_image="skimage:hubble_deep_field",
                                            image_size=FLAGS.image_size, batch_size=batch_size)
    with trainer.dtype_policy(precision):
        t = trainer.build_trainer(config, jit_compile=False, training_forward=how == "on")
    # The transformation network as training steps compute it.
    network, objective = t._training_forward.value or t.network, t.objective
    size = FLAGS.image_size
    x = tf.constant(np.random.default_rng(0).uniform(0, 255, (batch_size, size, size, 3)),
                    tf.float32)
    targets = objective.content_targets(x)
    variables = t.network.trainable_variables

    @tf.function
    def forward(x):
        return network(x, training=True)

    @tf.function
    def forward_backward(x):
        with tf.GradientTape() as tape:
            loss = tf.reduce_mean(tf.cast(network(x, training=True), tf.float32))
        return tape.gradient(loss, variables)

    @tf.function
    def loss_backward(y):
        with tf.GradientTape() as tape:
            tape.watch(y)
            loss = tf.reduce_sum(objective(y, targets)["total"])
        return tape.gradient(loss, y)

    @tf.function
    def content(x):
        return objective.content_targets(x)

    stripped = without_memory_bound_layers(network)
    # The weights of every layer it keeps, taken from the network itself: the training
    # forward's rewritten convolutions read the network's kernels and own no variables.
    kept = [v for layer in t.network.layers if type(layer).__name__ not in MEMORY_BOUND_LAYERS
            for v in layer.trainable_weights]

    @tf.function
    def stripped_forward_backward(x):
        with tf.GradientTape() as tape:
            loss = tf.reduce_mean(tf.cast(stripped(x, training=True), tf.float32))
        return tape.gradient(loss, kept)

    def wait(fn, *args):
        return lambda: [v.numpy() for v in tf.nest.flatten(fn(*args))]

    one = x[:1]
    net = conv_macs(t.network, one)  # the function's arithmetic, as the paper's layers
    vgg = objective.loss_network
    prep = preprocess(one, vgg.weight_source or "torchvision")
    loss_macs = conv_macs(vgg.features, prep)
    content_macs = conv_macs(vgg._cut(objective.content_layers, "content_cut"), prep)
    # A step: the transformation network forward and backward (grads of its input and weights:
    # 3x forward), the loss network forward and backward to its input (2x), the content targets
    # forward (1x); 2 FLOPs a multiply-add.
    flops = 2 * batch_size * (3 * net + 2 * loss_macs + content_macs)
    rates = {}
    for dtype in ("bfloat16", "float32"):
        a = tf.cast(tf.random.normal((4096, 4096)), dtype)
        matmul = tf.function(lambda a: tf.linalg.matmul(a, a))
        images = tf.cast(tf.random.normal((4, 128, 128, 256)), dtype)
        kernel = tf.cast(tf.random.normal((3, 3, 256, 256)) * 0.05, dtype)
        conv = tf.function(lambda x, k: tf.nn.conv2d(x, k, 1, "SAME"))
        rates[dtype] = max(2 * 4096 ** 3 / median_seconds(wait(matmul, a)),
                           2 * 4 * 128 * 128 * 9 * 256 * 256
                           / median_seconds(wait(conv, images, kernel)))
    # This CPU's memory bandwidth, as one pass reading 256 MiB of float32 gets it (a sum: one
    # kernel, nothing written, far beyond the caches); the best of 10 runs. Reading is the
    # fastest traffic, so the traffic's time below is a lower bound.
    big = tf.random.normal((64 * 2 ** 20,))
    total = wait(tf.function(tf.reduce_sum), big)
    bandwidth = max(4 * 64 * 2 ** 20 / median_seconds(total, runs=1) for _ in range(10))
    return {"profile": precision, "batch_size": batch_size, "training_forward": how,
            "stripped_forward_backward": median_seconds(wait(stripped_forward_backward, x)),
            "memory_bound_bytes": memory_bound_bytes(network, one), "bandwidth": bandwidth,
            "forward": median_seconds(wait(forward, x)),
            "forward_backward": median_seconds(wait(forward_backward, x)),
            "loss_backward": median_seconds(wait(loss_backward, x)),
            "content": median_seconds(wait(content, x)),
            "step_flops": flops, "network_macs": net, "loss_macs": loss_macs,
            "content_macs": content_macs, "matmul_bfloat16": rates["bfloat16"],
            "matmul_float32": rates["float32"]}


def child() -> None:
    """Prints one JSON line per setting on this process's backend."""
    import keras

    tensorflow = keras.backend.backend() == "tensorflow"
    forwards = FLAGS.training_forward if tensorflow else ["off"]
    for batch_size in map(int, FLAGS.batch_sizes):
        for precision in FLAGS.precisions:
            for jit in FLAGS.jit_compile:
                for forward in forwards:
                    row = {"backend": keras.backend.backend(), "batch_size": batch_size,
                           "precision": precision, "jit_compile": jit,
                           "training_forward": forward}
                    try:
                        row["seconds"] = seconds_per_step(precision, jit, batch_size, forward)
                    except Exception as e:  # noqa: BLE001 (a setting a backend lacks is a result)
                        row["error"] = f"{type(e).__name__}: {str(e).splitlines()[0][:120]}"
                    print(json.dumps(row), flush=True)
    if FLAGS.profile and tensorflow:
        for batch_size in map(int, FLAGS.batch_sizes):
            for precision in FLAGS.precisions:
                for forward in forwards:
                    print(json.dumps(step_profile(precision, batch_size, forward)), flush=True)


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
    rows = [r for r in rows if "profile" not in r]
    base = {}  # (backend, batch) -> float32, jit off, the network's own layers where timed
    for r in rows:
        if (r.get("precision") == "float32" and r.get("jit_compile") == "off" and "seconds" in r
                and (r.get("training_forward") == "off" or (r["backend"], r["batch_size"])
                     not in base)):
            base[r["backend"], r["batch_size"]] = r["seconds"]
    lines = ["| backend | batch | precision | jit_compile | training forward | s/step | "
             "images/s | vs float32, jit off | 40k steps |",
             "|---|---|---|---|---|---|---|---|---|"]
    for r in rows:
        head = (f"| {r['backend']} | {r.get('batch_size', '')} | {r.get('precision', '')} | "
                f"{r.get('jit_compile', '')} | {r.get('training_forward', 'off')} |")
        if "seconds" not in r:
            lines.append(f"{head} failed: {r['error']} | | | |")
            continue
        s = r["seconds"]
        ref = base.get((r["backend"], r["batch_size"]))
        lines.append(f"{head} {s:.2f} | {r['batch_size'] / s:.2f} | "
                     f"{f'{ref / s:.2f}x' if ref else ''} | {s * PAPER_STEPS / 3600:.1f} h |")
    return lines


def profile_table(rows: list[dict]) -> list[str]:
    """The section "Training step profile": each part's seconds and share of the step, the
    step's arithmetic rate against the CPU's matrix-multiply rate in the same precision."""
    steps = {(r["precision"], r["batch_size"], r.get("training_forward", "off")): r["seconds"]
             for r in rows if r.get("backend") == "tensorflow" and r.get("jit_compile") == "off"
             and "seconds" in r}
    lines = []
    for r in rows:
        if "profile" not in r:
            continue
        precision, batch, forward = r["profile"], r["batch_size"], r["training_forward"]
        step = steps.get((precision, batch, forward))
        rate = r["matmul_bfloat16" if "bfloat16" in precision else "matmul_float32"]
        parts = [("transformation network, forward", r["forward"]),
                 ("transformation network, forward + backward", r["forward_backward"]),
                 ("loss network (VGG16 to relu4_3, Gram matrices, TV), forward + backward "
                  "from the output", r["loss_backward"]),
                 ("content targets (VGG16 to the content layer), forward", r["content"])]
        if step:
            parts.append(("whole step (Adam, the input batch, the rest)", step))
        how = ("networks.training_forward" if forward == "on"
               else "the network's own layers")
        lines += [f"TensorFlow, {precision}, batch {batch}, the transformation network "
                  f"computed by {how}: a step is "
                  f"{r['step_flops'] / 1e9:.0f} GFLOP (convolutions: the transformation "
                  f"network {r['network_macs'] / 1e9:.2f} GMAC an image forward, the loss "
                  f"network {r['loss_macs'] / 1e9:.2f}, the content targets "
                  f"{r['content_macs'] / 1e9:.2f}; forward and backward counted as 3x, 2x and "
                  "1x the forward). The best rate measured on this CPU (the faster of a 4096x4096 "
                  "matrix multiply and a 3x3 convolution of 256 to 256 channels on 4 x 128 x "
                  f"128): {r['matmul_bfloat16'] / 1e9:.0f} GFLOP/s in bfloat16, "
                  f"{r['matmul_float32'] / 1e9:.0f} GFLOP/s in float32.", "",
                  "| part | seconds | share of the step | GFLOP/s |", "|---|---|---|---|"]
        flops = {0: 2 * batch * r["network_macs"], 1: 6 * batch * r["network_macs"],
                 2: 4 * batch * r["loss_macs"], 3: 2 * batch * r["content_macs"],
                 4: r["step_flops"]}
        for i, (label, seconds) in enumerate(parts):
            share = f"{100 * seconds / step:.0f}%" if step else ""
            lines.append(f"| {label} | {seconds:.3f} | {share} | "
                         f"{flops[i] / seconds / 1e9:.0f} |")
        if step:
            lines += ["", f"The step reaches {r['step_flops'] / step / 1e9:.0f} GFLOP/s, "
                      f"{100 * r['step_flops'] / step / rate:.0f}% of the best rate measured in "
                      "the same precision.", ""]
        if "stripped_forward_backward" in r:
            lines += roofline_lines(r, batch, rate, step)
    return lines


def roofline_lines(r: dict, batch: int, rate: float, step: float | None) -> list[str]:
    """Where the transformation network's time goes that is not arithmetic: its forward and
    backward with and without its normalisation layers and ReLUs, those layers' least traffic
    against the memory bandwidth measured in the same run, and what that leaves a step."""
    full, stripped = r["forward_backward"], r["stripped_forward_backward"]
    conv_flops = 6 * batch * r["network_macs"]
    # Forward: each input read and output written once; backward: the output's gradient and
    # the saved input read, the input's gradient written (1.5x the forward's): 2.5x in all.
    traffic = 2.5 * batch * r["memory_bound_bytes"]
    least = traffic / r["bandwidth"]
    layers = full - stripped
    lines = ["Roofline of the transformation network (forward + backward, the part of the step "
             "furthest from the best rate): the same network with its normalisation layers and "
             "ReLUs made identities (`benchmarks/train_speed.py`, `without_memory_bound_layers`) "
             f"against the whole; those layers' least traffic ({traffic / 1e9:.2f} GB a step: "
             "each reads its input and writes its output once forward, and reads the output's "
             "gradient and its input and writes the input's gradient once backward) at this "
             f"CPU's memory bandwidth, {r['bandwidth'] / 1e9:.1f} GB/s (one pass reading 256 MiB "
             "of float32, the best of 10 runs).", "",
             "| part | seconds | GFLOP/s | of the best rate |", "|---|---|---|---|",
             f"| whole transformation network, forward + backward | {full:.3f} | "
             f"{conv_flops / full / 1e9:.0f} | {100 * conv_flops / full / rate:.0f}% |",
             f"| the same without its normalisation layers and ReLUs | {stripped:.3f} | "
             f"{conv_flops / stripped / 1e9:.0f} | {100 * conv_flops / stripped / rate:.0f}% |",
             f"| its normalisation layers and ReLUs (the difference) | {layers:.3f} | | |",
             f"| the same layers' least traffic at the measured bandwidth | {least:.3f} | | |",
             ""]
    if step:
        best = step - layers + least
        lines += [f"The normalisation layers and ReLUs take {100 * layers / step:.0f}% of the "
                  f"step, {layers / least:.1f}x the time their least traffic needs. Were they at "
                  f"that bound, the step would take {best:.3f} s, "
                  f"{100 * r['step_flops'] / best / rate:.0f}% of the best rate.", ""]
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
    profile = profile_table(rows)
    if profile:
        report.write_section(FLAGS.profile_section, "\n".join(profile), sys.argv)


if __name__ == "__main__":
    app.run(main)
