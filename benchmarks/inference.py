"""Inference speed: the trained style network as Keras, SavedModel and TFLite, on this machine.

    python benchmarks/inference.py [--model=starry_night] [--sizes=256,512,1024]
        [--parts=speed,large,video]

For each square size (a real photo, centre-cropped): median latency of one image and images per
second, the formats interleaved run by run, for

* the Keras model (``predict_on_batch``) in float32, bfloat16 and float16
  (``networks.with_precision``, as ``stylize --precision`` runs it),
* the SavedModel (``serving_float``, as ``kperceptual.stylize`` runs it),
* TFLite with each ``--quantize`` (none, float16, dynamic, int8, int16x8), converted here as
  ``kperceptual.export`` converts it, at a dynamic input size, and run with LiteRT on all
  cores; and the ``--as_written`` ones (float16, dynamic) converted with the layers as written,
  before the rewrite for the XNNPACK delegate,
* a straightforward PyTorch float32 implementation of the same network (if torch is installed;
  the weights do not change the time), the reference the issue asks us to beat.

Then the peak memory and time of ``kperceptual.stylize`` on an 8000x6000 photo with a 4 GiB memory
budget (tiled; a separate process, measured with ``getrusage``), and video frames per second at
640x480 (decode, stylise, encode): ``video.stylize_video`` (a reader thread, batches through the
network, a writer thread) against the one-thread loop it replaced, in float32 and at
``--precision=auto``, interleaved in one run. Writes the sections "Inference", "Inference: a
large photo" and "Inference: video" of docs/benchmarks.md.

``--parts=huge``: images that do not fit whole, each in its own process (``getrusage``: peak
resident memory, CPU time), tiled window by window (``tiling_mode="windows"``, the path before
the layer-by-layer executor: 16 passes for this network) and layer by layer
(``kperceptual.inference.layerwise``), with the arithmetic of each (multiply-adds of the convolutions run
over those of one untiled pass), the two outputs' PSNR against each other, and the layer-by-layer
output's PSNR against the untiled one on an image that fits whole. Section "Inference: huge
images".
"""

from __future__ import annotations

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
from kperceptual.imaging import images  # noqa: E402
from kperceptual.inference import stylizer as inference
from kperceptual.inference import loading as models
from kperceptual import networks
from kperceptual.inference import video

flags.DEFINE_string("model", "starry_night", "A name in savedmodels/ (with its Keras network), "
                                             "a SavedModel folder or a .keras file.")
flags.DEFINE_list("sizes", ["256", "512", "1024"], "Square image sizes.")
flags.DEFINE_integer("runs", 5, "Timed runs per size and format (median), after one warm-up.")
flags.DEFINE_list("quantize", ["none", "float16", "dynamic", "int8", "int16x8"],
                  "TFLite variants.")
flags.DEFINE_list("as_written", ["float16", "dynamic"],
                  "TFLite variants also converted with the layers as written "
                  "(convert_tflite(xnnpack=False), the files before the rewrite for XNNPACK), "
                  "timed beside the rest.")
flags.DEFINE_list("parts", ["speed", "large", "video"],
                  "speed: latencies and TFLite sizes (section \"Inference\"); large: the "
                  "8000x6000 tiled run, minutes on 2 cores (section \"Inference: a large "
                  "photo\"); video: frames per second at 640x480, the pipeline against the "
                  "one-thread loop (section \"Inference: video\"); huge: window by window against "
                  "layer by layer (section \"Inference: huge images\"), tens of minutes.")
flags.DEFINE_list("huge", ["4000x3000:2G:windows+layers", "8000x6000:4G:windows+layers",
                          "8000x6000:4G:layers:bfloat16"],
                  "--parts=huge runs: WIDTHxHEIGHT:BUDGET:tilings (windows+layers)[:precision]. "
                  "2G at 4000x3000 leaves windows of about the share of the image that 4G "
                  "leaves at 8000x6000 (about 10x one pass's arithmetic either way).")
flags.DEFINE_string("huge_precision", "float32", "--precision of the --parts=huge runs that "
                                                 "name none.")
flags.DEFINE_integer("huge_parity_size", 2048, "--parts=huge: the long side of the image run "
                                               "whole and layer by layer for the PSNR.")
flags.DEFINE_integer("video_frames", 48, "Frames of the generated 640x480 test video.")
flags.DEFINE_integer("video_batch", 4, "Frames per network call in the video runs (stylize's "
                                       "--batch_size default).")
flags.DEFINE_integer("video_rounds", 3, "Rounds of the video runs, each variant once per round "
                                        "(interleaved, so load from other processes falls on "
                                        "all alike); the median is reported.")
flags.DEFINE_bool("write", True, "Write the section into docs/benchmarks.md.")
FLAGS = flags.FLAGS

PHOTO = "skimage:astronaut"
# The issue's numbers for a straightforward PyTorch implementation on a 2-core CPU (seconds).
ISSUE_TORCH = {512: 0.62, 1024: 4.3}
PAPER_GPU = {256: 0.015, 512: 0.05, 1024: 0.21}  # the paper's network on a GTX Titan X
SLOW_SECONDS = 10.0


def time_runners(runners: dict, batch) -> dict:
    """{label: median seconds per call, or the one-line reason it failed}. One warm-up call
    each, then ``--runs`` rounds that call every runner once in turn (interleaved, so load from
    other processes falls on all alike); a runner slower than ``SLOW_SECONDS`` per call is timed
    once more after its warm-up instead, after the rounds."""
    results, times, slow = {}, {}, {}
    for label, fn in runners.items():
        try:
            start = time.perf_counter()
            fn(batch)
            seconds = time.perf_counter() - start
        except (RuntimeError, ValueError) as e:
            results[label] = f"fails: {str(e).splitlines()[0][:120]}"
            continue
        (slow if seconds > SLOW_SECONDS else times)[label] = []
    for _ in range(FLAGS.runs):
        for label in times:
            start = time.perf_counter()
            runners[label](batch)
            times[label].append(time.perf_counter() - start)
    for label in slow:
        results[label] = report.median_seconds(runners[label], batch, 1, warmup=0)
    results.update({label: float(np.median(t)) for label, t in times.items()})
    return {label: results[label] for label in runners}


def cell(value) -> str:
    return value if isinstance(value, str) else f"{value:.3f} s ({1 / value:.1f}/s)"


def torch_forward():
    """The PyTorch reference network's forward pass on NHWC float32 batches, or None."""
    try:
        import torch

        from benchmarks.torch_reference import StyleTransferNetwork
    except ImportError:
        return None, ""
    torch.set_num_threads(os.cpu_count())
    net = StyleTransferNetwork().eval()

    def forward(batch):
        with torch.no_grad():
            x = torch.from_numpy(batch).permute(0, 3, 1, 2).contiguous()
            return net(x).permute(0, 2, 3, 1).numpy()

    return forward, f"PyTorch {torch.__version__}"


def tflite_variants(network, folder: str) -> dict:
    """{label: (TFLiteModel, size in MB, conversion seconds)}, converted as
    ``python -m kperceptual.export --format=tflite`` does (calibrated on the bundled photos),
    and the ``--as_written`` ones as they were before the rewrite for XNNPACK. LiteRT runs on
    every CPU (``TFLiteModel``'s default)."""
    from kperceptual.imaging import files
    from kperceptual.serving import tf_tflite as tflite
    from kperceptual.serving.litert import TFLiteModel

    found = {}
    jobs = [(q, True) for q in FLAGS.quantize] + [(q, False) for q in FLAGS.as_written]
    for quantize, xnnpack in jobs:
        label = quantize if xnnpack else f"{quantize}, layers as written"
        path = os.path.join(folder, tflite.tflite_filename(
            "model" if xnnpack else "as_written", quantize))
        calibration = (tflite.calibration_batches("skimage", 32, 256)
                       if quantize in tflite.CALIBRATED else None)
        start = time.perf_counter()
        files.write_atomically(path, tflite.convert_tflite(network, quantize, 0, calibration,
                                                           xnnpack=xnnpack))
        seconds = time.perf_counter() - start
        found[label] = (TFLiteModel(path), os.path.getsize(path) / 1e6, seconds)
    return found


def sequential_video(stylizer, source: str, target: str, batch_size: int) -> int:
    """The loop ``video.stylize_video`` ran before its reader and writer threads: read a batch,
    stylise it, encode it, in this thread (as at commit 1af1014); the frames written."""
    import imageio.v2 as imageio

    from kperceptual.imaging import files
    from kperceptual.inference.tiling import pad_to_multiple

    def batches(reader):
        batch = []
        for frame in reader:
            batch.append(np.asarray(frame)[..., :3])
            if len(batch) == batch_size:
                yield batch
                batch = []
        if batch:
            yield batch

    reader = imageio.get_reader(source, format="FFMPEG")
    fps = float(reader.get_meta_data()["fps"])
    writer, count = None, 0
    try:
        with files.atomic_path(target) as tmp:
            try:
                for batch in batches(reader):
                    for out in stylizer.frames(batch):
                        if writer is None:
                            writer = video._open_writer(tmp, fps)
                        writer.append_data(pad_to_multiple(out[..., :3], 2, mode="edge"))
                        count += 1
            finally:
                if writer is not None:
                    writer.close()
            video.copy_audio(source, tmp)
    finally:
        reader.close()
    return count


def video_clip(folder: str) -> str:
    """A generated 640x480 clip of ``--video_frames`` frames at 24 fps: a slow pan over a real
    photo, H.264."""
    import imageio.v2 as imageio

    photo = images.resize(images.read_image(PHOTO), 540, 720)
    source = os.path.join(folder, "pan_640x480.mp4")
    with imageio.get_writer(source, format="FFMPEG", fps=24, codec="libx264", quality=8,
                            ffmpeg_log_level="error") as writer:
        for i in range(FLAGS.video_frames):
            writer.append_data(photo[30:510, i:i + 640])
    return source


def decode_and_encode_seconds(source: str) -> tuple[float, float]:
    """Seconds to decode ``source`` alone and to encode its frames alone (as the video runs
    do): what overlapping them with the network can save at most."""
    import imageio.v2 as imageio

    start = time.perf_counter()
    reader = imageio.get_reader(source, format="FFMPEG")
    try:
        frames = [np.asarray(frame)[..., :3] for frame in reader]
    finally:
        reader.close()
    decode = time.perf_counter() - start
    with tempfile.TemporaryDirectory() as folder:
        start = time.perf_counter()
        writer = video._open_writer(os.path.join(folder, "copy.mp4"), 24.0)
        for frame in frames:
            writer.append_data(frame)
        writer.close()
        encode = time.perf_counter() - start
    return decode, encode


def video_section(model) -> str:
    """The section "Inference: video": end-to-end frames per second at 640x480 of
    ``video.stylize_video`` and of the one-thread loop before it, float32 and auto precision,
    each variant once per round, interleaved; medians and ratios to the old loop in float32."""
    batch = FLAGS.video_batch
    load = os.getloadavg()[0]
    stylizers = {p: inference.Stylizer(model, precision=p) for p in ("float32", "auto")}
    # Before the network was rewritten into faster TensorFlow ops (``serving.tf_rewrite``):
    # Keras's predict_on_batch, float32.
    before = stylizers["before"] = inference.Stylizer(model, precision="float32")
    before.forward = before.tiler.forward = lambda x: np.asarray(
        before.model.network.predict_on_batch(np.asarray(x, np.float32)))
    variants = [("one-thread loop, Keras predict_on_batch (before)", "before", sequential_video),
                ("one-thread loop, rewritten network", "float32", sequential_video),
                ("reader + network + writer threads, rewritten network", "float32", None),
                ("reader + network + writer threads, rewritten network", "auto", None)]
    rates = {i: [] for i in range(len(variants))}
    with tempfile.TemporaryDirectory() as folder:
        source = video_clip(folder)
        decode, encode = decode_and_encode_seconds(source)
        photo = images.read_image(PHOTO)
        for stylizer in stylizers.values():  # warm-up at the batch's shape
            stylizer.frames([images.resize(photo, 480, 640)] * batch)
        for round_ in range(FLAGS.video_rounds):
            for i, (label, precision, loop) in enumerate(variants):
                target = os.path.join(folder, f"out_{round_}_{i}.mp4")
                stylizer = stylizers[precision]
                start = time.perf_counter()
                if loop is None:
                    frames = video.stylize_video(stylizer, source, target,
                                                 batch_size=batch).frames
                else:
                    frames = loop(stylizer, source, target, batch)
                rates[i].append(frames / (time.perf_counter() - start))
                print(f"video round {round_}: {label}, {precision}: {rates[i][-1]:.2f} "
                      "frames/s", flush=True)
    base = float(np.median(rates[0]))
    rows = ["| path | precision | frames/s (median) | runs | vs the loop, float32 |",
            "|---|---|---|---|---|"]
    for i, (label, precision, _) in enumerate(variants):
        resolved = stylizers[precision].precision
        shown = (resolved if precision == "before" else
                 precision if precision == resolved else f"{precision} ({resolved})")
        median = float(np.median(rates[i]))
        rows.append(f"| {label} | {shown} | {median:.2f} | "
                    f"{', '.join(f'{r:.2f}' for r in rates[i])} | {median / base:.2f}x |")
    rewrite = float(np.median(rates[1]) / np.median(rates[0]))
    threads = float(np.median(rates[2]) / np.median(rates[1]))
    loop_seconds = FLAGS.video_frames / base
    best = max(float(np.median(rates[i])) for i in rates) / base
    return "\n".join([
        f"`video.stylize_video` on a generated 640x480 clip of {FLAGS.video_frames} frames (a "
        f"pan over `{PHOTO}`, H.264), `{model.name}`, {batch} frames per network call: decode, "
        "network and H.264 encode end to end, against the one-thread loop it replaced (read a "
        "batch, stylise it, encode it). Variants interleaved, "
        f"{FLAGS.video_rounds} round(s): each run's frames per second and the median. Load "
        f"average when the runs began: {load:.1f} on {os.cpu_count()} cores (other processes "
        "sharing them slow every variant, unevenly: compare the runs' spread).", "",
        f"Decoding the clip alone takes {decode:.2f} s and encoding it {encode:.2f} s, "
        f"{100 * (decode + encode) / loop_seconds:.1f}% of the loop's float32 time "
        f"({loop_seconds:.0f} s): the most that overlapping them with the network can save "
        "where the network keeps every core busy. The rewritten network / Keras's, both in "
        f"the one-thread loop in float32: {rewrite:.2f}x; threads / loop, both rewritten in "
        f"float32: {threads:.2f}x. The issue's target, 3x the loop's float32 rate before, is "
        f"{'met' if best >= 3 else 'not met'}: {best:.2f}x at best.", "",
        *rows])


# Runs a command and prints its peak resident memory in KiB: a small process in between, so the
# measured child is not forked from this one (a child forked from a large process starts with
# its pages counted in ru_maxrss).
_PEAK_OF_CHILD = ("import resource, subprocess, sys; r = subprocess.run(sys.argv[1:]); "
                  "print(resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss); "
                  "sys.exit(r.returncode)")


def large_photo_run(model_spec: str, folder: str) -> str:
    """Stylises an 8000x6000 photo with --memory_budget=4G in a child process; its time and
    peak resident memory."""
    photo = images.read_image(PHOTO)
    big = images.resize(photo, 6000, 8000)
    source = os.path.join(folder, "large_8000x6000.jpg")
    images.write_image(source, big)
    command = [sys.executable, "-c", _PEAK_OF_CHILD, sys.executable, "-m", "kperceptual.stylize",
               f"--model={model_spec}", "--memory_budget=4G",
               f"--output={os.path.join(folder, 'large_out')}", source]
    start = time.perf_counter()
    result = subprocess.run(command, capture_output=True, text=True, cwd=report.REPO)
    seconds = time.perf_counter() - start
    if result.returncode != 0:
        raise RuntimeError(f"stylize failed on the 8000x6000 photo: {result.stderr[-800:]}")
    peak = int(result.stdout.split()[-1]) / 2**20  # KiB -> GiB
    # stylize's line for the image: "<input> -> <output> (<how it was tiled>)".
    tiled = next((line.split(" (", 1)[1].rstrip(")") for line in result.stdout.splitlines()
                  if " -> " in line and " (" in line), "whole")
    return (f"| 8000x6000 photo (`{PHOTO}` upscaled), `stylize --memory_budget=4G` ({tiled}) "
            f"| {seconds:.0f} s | peak {peak:.2f} GiB resident |")


# A child that runs one image as ``kperceptual.stylize`` does (read, Stylizer.image) with a
# tiling mode, saves the uint8 output and prints a JSON line: the image's seconds and CPU seconds,
# the plan and its arithmetic, the layer-by-layer time split.
_HUGE_CHILD = """
import json, os, sys, time
from kperceptual import cli  # quietens TensorFlow
import numpy as np
from kperceptual.imaging import images
from kperceptual.inference import layerwise
from kperceptual.inference import stylizer as inference
source, model, budget, mode, precision, out = sys.argv[1:7]
rgb = images.read_image(source)
stylizer = inference.Stylizer(model, memory_budget=budget, tiling_mode=mode, precision=precision)
load = os.getloadavg()[0]
start, cpu = time.perf_counter(), time.process_time()
result = stylizer.image(rgb)
info = {"seconds": time.perf_counter() - start, "cpu": time.process_time() - cpu,
        "load": [load, os.getloadavg()[0]]}
plan = stylizer.last_plan
if isinstance(plan, layerwise.LayerPlan):
    info.update(arithmetic=plan.arithmetic, plan=plan.describe(),
                split=stylizer.tiler.layerwise.last_seconds)
elif plan is not None:
    passes = len(stylizer.tiler.geometry.global_norms) + 1
    info.update(arithmetic=layerwise.windows_arithmetic(stylizer.tiler.network, plan),
                plan=f"{len(plan.windows)} windows of {plan.rows.size}x{plan.cols.size}, "
                     f"{passes} passes")
np.save(out, result)
print(json.dumps(info))
"""

# Runs a command and prints its peak resident memory (KiB) and CPU seconds (user + system), as
# _PEAK_OF_CHILD does.
_USAGE_OF_CHILD = ("import resource, subprocess, sys; r = subprocess.run(sys.argv[1:]); "
                   "u = resource.getrusage(resource.RUSAGE_CHILDREN); "
                   "print(u.ru_maxrss, u.ru_utime + u.ru_stime); sys.exit(r.returncode)")


def huge_run(source: str, budget: str, mode: str, precision: str, out: str) -> dict:
    """One ``_HUGE_CHILD`` run: its JSON, plus the process's peak memory (GiB) and CPU."""
    import json

    command = [sys.executable, "-c", _USAGE_OF_CHILD, sys.executable, "-c", _HUGE_CHILD, source,
               FLAGS.model, budget, mode, precision, out]
    result = subprocess.run(command, capture_output=True, text=True, cwd=report.REPO)
    if result.returncode != 0:
        raise RuntimeError(f"{mode} run failed: {result.stderr[-800:]}")
    lines = result.stdout.strip().splitlines()
    info = json.loads(lines[-2])
    peak_kib, process_cpu = lines[-1].split()
    info.update(peak=int(peak_kib) / 2 ** 20, process_cpu=float(process_cpu))
    return info


def huge(model) -> str:
    """The section "Inference: huge images"."""
    from kperceptual.metrics import psnr

    photo = images.read_image(PHOTO)
    rows = ["| image | `--memory_budget` | precision | tiling | time | CPU time | peak resident "
            "| arithmetic (x one untiled pass) | plan |", "|---|---|---|---|---|---|---|---|---|"]
    notes = []
    with tempfile.TemporaryDirectory() as folder:
        for spec in FLAGS.huge:
            size, budget, modes, *rest = spec.split(":")
            precision = rest[0] if rest else FLAGS.huge_precision
            width, height = (int(v) for v in size.split("x"))
            source = os.path.join(folder, f"huge_{size}.png")
            if not os.path.exists(source):
                images.write_image(source, images.resize(photo, height, width))
            results = {}
            for mode in modes.split("+"):
                out = os.path.join(folder, f"{size}_{mode}.npy")
                info = results[mode] = huge_run(source, budget, mode, precision, out)
                label = ({"windows": "window by window (before)",
                          "layers": "layer by layer (now)"}[mode] if "plan" in info
                         else "none: fits whole")
                rows.append(
                    f"| {size} | {budget} | {precision} | {label} | {info['seconds']:.0f} s | "
                    f"{info['cpu']:.0f} s | {info['peak']:.2f} GiB | "
                    f"{info.get('arithmetic', 1.0):.3f} | {info.get('plan', 'whole')} |")
                print(rows[-1], info, flush=True)
            if {"windows", "layers"} <= set(results):
                old, new = results["windows"], results["layers"]
                a = np.load(os.path.join(folder, f"{size}_windows.npy"))
                b = np.load(os.path.join(folder, f"{size}_layers.npy"))
                notes.append(
                    f"{size}, {precision}: layer by layer took "
                    f"{new['seconds'] / old['seconds']:.3f} of the window-by-window time "
                    f"({old['seconds'] / new['seconds']:.1f}x faster; CPU time "
                    f"{old['cpu'] / new['cpu']:.1f}x less), its arithmetic "
                    f"{new['arithmetic']:.3f}x one pass against {old['arithmetic']:.2f}x; the "
                    f"two outputs (uint8) are {psnr(a, b):.1f} dB apart (both exact up to float "
                    "rounding). Load average (1 min) at the start and end of each run: "
                    f"{old['load'][0]:.1f}-{old['load'][1]:.1f} and "
                    f"{new['load'][0]:.1f}-{new['load'][1]:.1f}.")
            for mode, info in results.items():
                if "split" in info:
                    split = info["split"]
                    notes.append(
                        f"{size}, {precision}, layer by layer, in thread-seconds of its two "
                        f"threads (each reads its tiles' windows, runs the network, writes the "
                        f"tiles): {split['network']:.0f} s in the network's layers, "
                        f"{split['read']:.0f} s reading windows and {split['write']:.0f} s "
                        f"writing tiles ({split['io_cpu']:.0f} s of CPU).")
    # Exactness against the untiled output, on an image that fits whole.
    side = FLAGS.huge_parity_size
    image = images.resize(photo, side * 3 // 4, side)
    whole = inference.Stylizer(model, precision=FLAGS.huge_precision, memory_budget="64G")
    tiled = inference.Stylizer(model, precision=FLAGS.huge_precision, tile=512,
                               tiling_mode="layers", memory_budget="64G")
    expected, got = whole.image(image), tiled.image(image)
    notes.append(
        f"{side}x{side * 3 // 4}, run whole and layer by layer ({tiled.last_plan.describe()}):"
        f" {psnr(got, expected):.1f} dB (uint8 outputs; largest difference "
        f"{np.abs(got.astype(int) - expected).max()} level).")
    return "\n".join([
        f"The `{FLAGS.model}` network on `{PHOTO}` upscaled, each run "
        "in its own process as `stylize` runs it (`Stylizer.image`: tiling, colour finish, "
        "uint8); time and CPU time of that call, peak resident memory of the process "
        "(getrusage). Window by window is the path before the layer-by-layer executor "
        "(`tiling_mode=\"windows\"`); arithmetic counts the convolutions' multiply-adds run, "
        "over one untiled pass's.", "", *rows, "", *[f"- {n}" for n in notes]])


def speed(model) -> str:
    """The section "Inference": latencies per format and size, TFLite files, video."""
    sizes = [int(s) for s in FLAGS.sizes]
    photo = images.read_image(PHOTO)
    network = model.network
    from kperceptual.serving.tf_rewrite import tensorflow_forward

    half = networks.with_precision(network, "bfloat16")

    def keras_predict(net):
        return lambda x: np.asarray(net.predict_on_batch(x))

    runners = {"Keras `predict_on_batch` (before the rewrite)": keras_predict(network),
               "Keras `predict_on_batch`, bfloat16 (before the rewrite)": keras_predict(half),
               "rewritten network (`stylize`, `serving.tf_rewrite`)": tensorflow_forward(
                   network),
               "rewritten, bfloat16 (`--precision=bfloat16`)": tensorflow_forward(half),
               "rewritten, float16 (`--precision=float16`)": tensorflow_forward(
                   networks.with_precision(network, "float16")),
               "SavedModel (`serving_float`)": model.fn}
    with tempfile.TemporaryDirectory() as folder:
        variants = tflite_variants(network, folder)
        for quantize, (runner, _, _) in variants.items():
            runners[f"TFLite {quantize} (LiteRT)"] = runner
        torch_fn, torch_name = torch_forward()
        if torch_fn is not None:
            runners[f"PyTorch reference ({torch_name}, float32)"] = torch_fn
        seconds = {}
        load = os.getloadavg()[0]
        for size in sizes:
            batch = images.resize_and_center_crop(photo, size)[None].astype(np.float32)
            for label, value in time_runners(runners, batch).items():
                seconds[label, size] = value
                print(f"{label} {size}: {value}", flush=True)
    header = "| format | " + " | ".join(f"{s}x{s}" for s in sizes) + " |"
    rows = [header, "|---|" + "---|" * len(sizes)]
    for label in runners:
        rows.append(f"| {label} | " + " | ".join(cell(seconds[label, s]) for s in sizes) + " |")
    rows.append("| the issue's PyTorch figure (2-core CPU) | " + " | ".join(
        f"{ISSUE_TORCH[s]:.2f} s" if s in ISSUE_TORCH else "" for s in sizes) + " |")
    rows.append("| the paper (GTX Titan X) | " + " | ".join(
        f"{PAPER_GPU[s]:.3f} s" if s in PAPER_GPU else "" for s in sizes) + " |")
    sizes_table = ["| TFLite | file | conversion |", "|---|---|---|"] + [
        f"| {q} | {mb:.1f} MB | {s:.0f} s |" for q, (_, mb, s) in variants.items()]
    saved_model = "SavedModel (`serving_float`)"
    ratios = []
    for quantize in variants:
        label = f"TFLite {quantize} (LiteRT)"
        cells = [f"{seconds[label, s] / seconds[saved_model, s]:.2f}" for s in sizes
                 if not isinstance(seconds[label, s], str)
                 and not isinstance(seconds[saved_model, s], str)]
        ratios.append(f"{quantize} {' / '.join(cells)}")
    return "\n".join([
        f"The `{model.name}` style network on a real photo (`{PHOTO}`, centre-cropped), one image "
        f"per call; median of {FLAGS.runs} runs after a warm-up, the formats interleaved run by "
        f"run (one run, after the others, where a call takes over {SLOW_SECONDS:.0f} s), seconds "
        "per image (images per second). TFLite runs with LiteRT on all cores, dynamic input "
        "size, calibrated on scikit-image's bundled photos; \"layers as written\" is the file "
        "converted without the rewrite for LiteRT's XNNPACK delegate "
        "(`kperceptual/serving/tf_rewrite.py`). Load average when the runs began: "
        f"{load:.1f} on {os.cpu_count()} cores.", "",
        *rows, "",
        "TFLite time / SavedModel time, same runs, at " + ", ".join(str(s) for s in sizes)
        + ": " + "; ".join(ratios) + ".", "", *sizes_table])


def main(argv):
    del argv
    model = models.load_model(FLAGS.model)
    if model.network is None:
        sys.exit(f"inference: --model={FLAGS.model}: has no Keras network; pass a .keras file "
                 "or a SavedModel exported by kperceptual.export")
    if "large" in FLAGS.parts:
        with tempfile.TemporaryDirectory() as folder:
            row = large_photo_run(FLAGS.model, folder)
        body = "\n".join([
            "`python -m kperceptual.stylize` in its own process on an 8000x6000 photo that does "
            "not fit the budget whole, so it is tiled with exact whole-image statistics (layer "
            "by layer since the layer-by-layer executor; window by window, 16 passes, before: "
            "see \"Inference: huge images\"); peak resident memory of that process "
            "(getrusage).", "",
            "| job | time | memory |", "|---|---|---|", row])
        print(body)
        if FLAGS.write:
            report.write_section("Inference: a large photo", body, sys.argv)
    if "huge" in FLAGS.parts:
        body = huge(model)
        print(body)
        if FLAGS.write:
            report.write_section("Inference: huge images", body, sys.argv)
    if "speed" in FLAGS.parts:
        body = speed(model)
        print(body)
        if FLAGS.write:
            report.write_section("Inference", body, sys.argv)
    if "video" in FLAGS.parts:
        body = video_section(model)
        print(body)
        if FLAGS.write:
            report.write_section("Inference: video", body, sys.argv)


if __name__ == "__main__":
    app.run(main)
