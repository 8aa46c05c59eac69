"""Tiling: exact against the untiled run (instance norm), window plans, the memory budget; the
layer-by-layer executor (kperceptual.inference.layerwise): exact against the untiled run for the shipped
style, multi-style and super-resolution networks and the network variants, in memory and on
disk, its temporary files removed (also on an error), its arithmetic, and the fallback to
windows."""

import dataclasses
import os
import subprocess
import sys

import numpy as np
import pytest

from helpers import REPO, psnr, with_border_margin
from kperceptual.imaging import images
from kperceptual.inference import stylizer as inference
from kperceptual import networks
from kperceptual.inference import tiling
from kperceptual.inference import layerwise
from kperceptual.inference import loading as models


@pytest.fixture(scope="module")
def tiny_network(tiny_style_model):
    from kperceptual.inference.loading import load_keras_network

    return load_keras_network(tiny_style_model)


@pytest.mark.parametrize("size,tile", [((250, 190), 148),   # sides not multiples of 4
                                       ((256, 192), 200)])  # a tile that does not divide it
def test_tiled_output_matches_the_untiled_run(photos, tiny_network, size, tile):
    image = images.resize(photos["astronaut"], *size)
    tiler = tiling.Tiler(tiny_network)
    plan = tiler.plan(*size, tile)
    assert len(plan.windows) > 1 and plan.exact
    whole = tiler.forward(image[None].astype(np.float32))[0]
    tiled = tiler.run(image, plan)
    assert tiled.shape == whole.shape == (*size, 3)
    assert psnr(tiled, whole) >= 40 and np.abs(tiled - whole).max() < 0.5

    # The test can tell: windows with their own statistics do show seams.
    naive = tiling.Tiler(tiny_network)
    naive.geometry = dataclasses.replace(naive.geometry, global_norms=())
    assert psnr(naive.run(image, plan), whole) < 35


def test_windows_are_aligned_and_blend_weights_sum_to_one():
    for length, tile, overlap in [(1000, 256, 72), (252, 148, 72), (96, 200, 72),
                                  (6000, 1400, 136)]:
        axis = tiling.plan_axis(length, tile, overlap, halo=28, alignment=4)
        assert all(s % 4 == 0 and s + axis.size <= length for s in axis.starts)
        assert axis.cuts[0] == 0 and axis.cuts[-1] == length
        assert list(axis.cuts) == sorted(axis.cuts)
        total = np.zeros(length)
        for i in range(len(axis.starts)):
            first, end, w = axis.weights(i, 1.0, length)
            assert axis.starts[i] <= first and end <= axis.starts[i] + axis.size
            total[first:end] += w
        np.testing.assert_allclose(total, 1.0, atol=1e-6)
        assert axis.exact


def test_geometry_of_the_default_and_the_batch_norm_networks():
    geometry = tiling.network_geometry(networks.StyleTransferNetwork())
    # radius 4 + 1 + 2 + 10 * 4 + 2 + 1 + 4 = 54, plus the alignment, rounded up to 4
    assert (geometry.halo, geometry.alignment) == (60, 4)
    assert len(geometry.global_norms) == 15
    assert geometry.forward_bytes_per_pixel == 64 + 4.5 * 64 * 4  # 64 channels at full size
    assert tiling.network_geometry(networks.StyleTransferNetwork(norm="batch")).global_norms == ()


def test_super_resolution_scale_comes_from_the_output(photos):
    import keras

    inputs = keras.Input((None, None, 3))
    x = networks.NearestUpsampling2D(2)(inputs)
    net = keras.Model(inputs, keras.layers.Conv2D(3, 3, padding="same")(x))
    image = images.resize(photos["coffee"], 90, 130)
    stylizer = inference.Stylizer(net, tile=64, strength=0.5)
    assert stylizer.scale == 2.0
    tiled = stylizer.image(image)
    whole = inference.stylize_image(net, image, strength=0.5)
    assert tiled.shape == whole.shape == (180, 260, 3)
    assert psnr(tiled, whole) >= 40


def test_memory_budget_chooses_tiling(tiny_network):
    # Compile first (the 32-pixel scale probe and a forward pass), so the resident memory the
    # budget is set from is what the plans below see.
    warm = inference.Stylizer(tiny_network)
    warm.image(np.zeros((64, 64, 3), np.uint8))
    assert warm.scale == 1.0
    resident = inference.resident_bytes()
    stylizer = inference.Stylizer(tiny_network, memory_budget=resident + 40 * 2 ** 20,
                                  tiling_mode="windows")
    per_pixel = stylizer.forward_bytes_per_pixel
    assert per_pixel == 64 + 4.5 * 8 * 4
    assert stylizer.plan(200, 150) is None  # about 6 MB: whole
    plan = stylizer.plan(1200, 900)  # about 250 MB whole: windows that fit
    assert plan is not None and plan.exact
    assert stylizer.estimate_bytes(1200, 900, plan.window_pixels) <= stylizer.memory_budget
    with pytest.raises(inference.MemoryBudgetError, match="needs at least"):
        stylizer.plan(4000, 3000)  # its buffers alone exceed the budget

    # By default an instance-normalised network that does not fit runs layer by layer, its
    # tiles' working set within what the budget leaves after the image buffers (and 74 MiB for
    # its compiled stages and second thread).
    layered = inference.Stylizer(tiny_network, memory_budget=resident + 120 * 2 ** 20)
    assert layered.plan(200, 150) is None
    plan = layered.plan(1200, 900)
    assert isinstance(plan, layerwise.LayerPlan)
    assert plan.work_bytes + plan.memory_bytes <= layered.layer_room(1200, 900)
    with pytest.raises(inference.MemoryBudgetError, match="needs about"):
        layered.plan(4000, 3000)


# -- layer by layer ------------------------------------------------------------------------

@pytest.fixture(scope="module")
def starry_night():
    return models.load_model("starry_night").network


def whole_output(network, image):
    return np.asarray(network.predict_on_batch(image[None].astype(np.float32)))[0]


@pytest.mark.parametrize("options", [{}, {"padding": "zero"}, {"upsample": "transpose"},
                                     {"num_residual_blocks": 2, "norm": "batch"}])
def test_layer_by_layer_is_exact_for_the_network_variants(photos, options):
    # Sides that are not multiples of 4, 24-pixel tiles: every stage in several tiles.
    network = networks.StyleTransferNetwork(filters=(8, 8, 8), **{"num_residual_blocks": 1,
                                                                  **options})
    walker = layerwise.LayerwiseNetwork(network)
    image = images.resize(photos["coffee"], 150, 97)
    plan = walker.plan(150, 97, room_bytes=2 ** 30, tile=24)
    assert all(t.count > 1 for t in plan.tiles)
    out = walker.run(image, plan)
    whole = whole_output(network, image)
    assert out.shape == whole.shape == (150, 97, 3)
    # Measured: 109-127 dB, at most 0.01 of a pixel level apart.
    assert psnr(out, whole) >= 40 and np.abs(out - whole).max() < 0.5
    # The same walker on another image: the statistics are that image's.
    other = images.resize(photos["astronaut"], 150, 97)
    assert psnr(walker.run(other, plan), whole_output(network, other)) >= 40


def test_layer_by_layer_eagerly(photos, tiny_network, tmp_path):
    # The path other backends take (layers called eagerly, statistics in NumPy).
    walker = layerwise.LayerwiseNetwork(tiny_network)
    walker.backend = "other"
    image = images.resize(photos["coffee"], 90, 70)
    plan = walker.plan(90, 70, room_bytes=2 ** 30, tile=32, temp_dir=str(tmp_path),
                       storage_bytes=0)
    assert psnr(walker.run(image, plan), whole_output(tiny_network, image)) >= 40


@pytest.mark.parametrize("precision", ["bfloat16", "float16"])
def test_layer_by_layer_in_half_precision(photos, tiny_network, precision, tmp_path):
    # Stored tensors keep the network's dtype (bfloat16 crosses into TensorFlow as its bits),
    # here all on disk; the output head stays float32.
    network = networks.with_precision(tiny_network, precision)
    walker = layerwise.LayerwiseNetwork(network)
    assert walker.stages[0].dtype == precision
    image = images.resize(photos["chelsea"], 150, 97)
    plan = walker.plan(150, 97, room_bytes=2 ** 30, tile=32, temp_dir=str(tmp_path),
                       storage_bytes=0)
    assert set(plan.placement.values()) == {"disk"}
    out = walker.run(image, plan)
    assert out.dtype == np.float32
    assert psnr(out, whole_output(network, image)) >= 40
    assert os.listdir(tmp_path) == []


@pytest.mark.slow
def test_layer_by_layer_matches_the_untiled_starry_night(photos, starry_night):
    image = images.resize(photos["astronaut"], 301, 250)
    walker = layerwise.LayerwiseNetwork(starry_night)
    # 15 convolutions that feed a normalisation, the inputs of residual blocks 2-5 (the first
    # block's is recomputed from down3's output by both its readers), the output.
    assert len(walker.stages) == 20
    plan = walker.plan(301, 250, room_bytes=2 ** 30, tile=96)
    assert sum(t.count for t in plan.tiles) > len(walker.stages)
    out = walker.run(image, plan)
    whole = whole_output(starry_night, image)
    assert psnr(out, whole) >= 40 and np.abs(out - whole).max() < 0.5  # measured 118 dB

    # The same through the Stylizer (uint8), chosen by itself: the window-by-window path
    # would have needed 16 passes.
    stylizer = inference.Stylizer(starry_night, tile=96)
    tiled = stylizer.image(image)
    assert isinstance(stylizer.last_plan, layerwise.LayerPlan)
    assert psnr(tiled, inference.Stylizer(starry_night).image(image)) >= 40


@pytest.mark.slow
def test_layer_by_layer_matches_a_multi_style_mix(photos):
    zoo = models.load_model("zoo").network
    weights = networks.style_weights(networks.style_names(zoo), "wave:0.5,udnie:0.5")
    image = images.resize(photos["chelsea"], 180, 230)
    whole = np.asarray(zoo.predict_on_batch([image[None].astype(np.float32), weights[None]]))[0]
    # The unbound network with the mix's weights (conditional instance normalisation) ...
    walker = layerwise.LayerwiseNetwork(zoo, style_weights=weights)
    out = walker.run(image, walker.plan(180, 230, room_bytes=2 ** 30, tile=64))
    assert psnr(out, whole) >= 40 and np.abs(out - whole).max() < 0.5  # measured 130 dB
    # ... and the Stylizer's bound one.
    stylizer = inference.Stylizer(zoo, style="wave:0.5,udnie:0.5", tile=64)
    assert psnr(stylizer.image(image),
                images.to_uint8(with_border_margin(zoo, image, weights))) >= 40
    assert isinstance(stylizer.last_plan, layerwise.LayerPlan)
    with pytest.raises(layerwise.NotWalkable, match="style weights"):
        layerwise.LayerwiseNetwork(zoo)


def test_layer_by_layer_super_resolution(photos):
    image = images.resize(photos["coffee"], 61, 75)
    # The shipped x4 network (no normalisation; bicubic residual head) ...
    sr = models.load_model("sr_x4_pixel").network
    stylizer = inference.Stylizer(sr, tile=64, tiling_mode="layers", histogram_match="off")
    out = stylizer.image(image)
    assert isinstance(stylizer.last_plan, layerwise.LayerPlan)
    whole = inference.Stylizer(sr, histogram_match="off").image(image)
    assert out.shape == whole.shape == (244, 300, 3)
    assert psnr(out, whole) >= 40
    # ... and an instance-normalised one, the case that needs whole-image statistics.
    network = networks.SuperResolutionNetwork(scale=4, filters=8, num_residual_blocks=1,
                                              norm="instance", residual="bicubic")
    conv = network.get_layer("out_conv")
    conv.set_weights([np.random.default_rng(0).normal(0, 0.05, w.shape).astype(np.float32)
                      for w in conv.get_weights()])
    walker = layerwise.LayerwiseNetwork(network)
    plan = walker.plan(61, 75, room_bytes=2 ** 30, tile=64)
    assert plan.output_scale == 4 and plan.tiles[-1].count > 1
    result = walker.run(image, plan)
    expected = whole_output(network, image)
    assert psnr(result, expected) >= 40 and np.abs(result - expected).max() < 0.5


@pytest.mark.slow
def test_layer_by_layer_on_disk_within_a_small_budget(photos, starry_night, tmp_path):
    image = images.resize(photos["astronaut"], 480, 640)
    whole = whole_output(starry_night, image)  # about 400 MB
    walker = layerwise.LayerwiseNetwork(starry_night)
    plan = walker.plan(480, 640, room_bytes=115 * 2 ** 20, temp_dir=str(tmp_path))
    assert "memory" in plan.placement.values() and "disk" in plan.placement.values()
    assert plan.work_bytes + plan.memory_bytes <= 115 * 2 ** 20
    out = walker.run(image, plan)
    assert psnr(out, whole) >= 40
    assert walker.last_folder.startswith(str(tmp_path))
    assert os.listdir(tmp_path) == []  # the stored tensors' files are gone
    # Everything on disk, in 64-pixel tiles.
    plan = walker.plan(480, 640, room_bytes=2 ** 30, tile=64, temp_dir=str(tmp_path),
                       storage_bytes=0)
    assert set(plan.placement.values()) == {"disk"}
    assert psnr(walker.run(image, plan), whole) >= 40
    assert os.listdir(tmp_path) == []

    # Through the Stylizer, with a budget 125 MiB above what the process holds.
    stylizer = inference.Stylizer(starry_night)
    stylizer.image(image[:64, :64])
    budget = inference.resident_bytes() + 125 * 2 ** 20
    small = inference.Stylizer(starry_night, memory_budget=budget)
    out = small.image(image)
    assert isinstance(small.last_plan, layerwise.LayerPlan) and small.last_plan.disk_bytes
    assert not os.path.exists(small.tiler.layerwise.last_folder)
    assert psnr(out, stylizer.image(image)) >= 40


def test_layer_by_layer_removes_its_files_after_an_error(photos, tiny_network, tmp_path):
    image = images.resize(photos["coffee"], 120, 100)
    walker = layerwise.LayerwiseNetwork(tiny_network)
    plan = walker.plan(120, 100, room_bytes=2 ** 30, temp_dir=str(tmp_path), storage_bytes=0)
    assert set(plan.placement.values()) == {"disk"}
    stage = walker.stages[5]
    fn = walker._compiled(stage)

    def failing(windows, box):
        assert os.listdir(walker.last_folder)  # earlier stages' files exist by now
        raise RuntimeError("a failure inside a stage")

    stage._compiled = failing
    try:
        with pytest.raises(RuntimeError, match="a failure inside a stage"):
            walker.run(image, plan)
    finally:
        stage._compiled = fn
    assert os.listdir(tmp_path) == []


def test_layer_by_layer_arithmetic_for_8000x6000_within_4g():
    # The default network planned as the Stylizer would with --memory_budget=4G (about 2 GiB
    # left after the process and the image buffers): one pass plus the tiles' margins, against
    # 16 passes over overlapping windows.
    network = networks.StyleTransferNetwork()
    walker = layerwise.LayerwiseNetwork(network)
    plan = walker.plan(6000, 8000, room_bytes=2 * 2 ** 30, check_disk=False)
    assert plan.arithmetic <= 1.05  # measured 1.009
    assert plan.work_bytes + plan.memory_bytes <= 2 * 2 ** 30
    windows = tiling.Tiler(network).plan(6000, 8000, 1300)
    assert layerwise.windows_arithmetic(network, windows) > 7.4


def test_a_network_that_cannot_be_walked_runs_in_windows(photos):
    import keras

    inputs = keras.Input((None, None, 3))
    x = keras.layers.Conv2D(8, 3, padding="same")(inputs)
    x = keras.layers.MaxPooling2D(1)(x)  # not a layer the executor knows
    x = keras.layers.GroupNormalization(groups=-1)(x)
    network = keras.Model(inputs, keras.layers.Conv2D(3, 3, padding="same")(x))
    warnings = []
    stylizer = inference.Stylizer(network, tile=64, warn=warnings.append)
    image = images.resize(photos["coffee"], 100, 130)
    out = stylizer.image(image)
    assert isinstance(stylizer.last_plan, tiling.TilePlan)
    assert len(warnings) == 1 and "not layer by layer" in warnings[0] and \
        "MaxPooling2D" in warnings[0]
    assert psnr(out, inference.Stylizer(network).image(image)) >= 40


@pytest.mark.slow
def test_memory_estimate_covers_the_measured_peak(tiny_style_model):
    """Peak RSS of one untiled image (a fresh process, compiled first) against the estimate.

    The high-water mark is reset (Linux ``/proc/self/clear_refs``) right before the measured
    call, so loading and compiling do not count."""
    code = f"""
import numpy as np
from kperceptual.inference import stylizer as inference
s = inference.Stylizer({tiny_style_model!r})
s.image(np.zeros((64, 64, 3), np.uint8))
image = np.random.default_rng(0).integers(0, 255, (1024, 1024, 3), dtype=np.uint8)
s.image(image[:512, :512])
try:
    with open("/proc/self/clear_refs", "w") as f:
        f.write("5")
except OSError as e:
    raise SystemExit(f"cannot reset the peak RSS (/proc/self/clear_refs): {{e}}")
before = inference.resident_bytes()
estimate = s.estimate_bytes(1024, 1024) - before
s.image(image)
with open("/proc/self/status") as f:
    hwm = next(int(line.split()[1]) * 1024 for line in f if line.startswith("VmHWM:"))
print(estimate, hwm - before)
"""
    env = dict(os.environ, PYTHONPATH=REPO, TF_CPP_MIN_LOG_LEVEL="3")
    result = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True,
                            text=True)
    if result.returncode:
        pytest.fail(result.stderr.strip().splitlines()[-1] if result.stderr.strip()
                    else f"exit status {result.returncode}")
    estimate, peak = (float(v) for v in result.stdout.split()[-2:])
    assert peak <= estimate <= 4 * peak, (estimate, peak)


@pytest.mark.parametrize("text,expected", [("4G", 4 * 2 ** 30), ("512M", 512 * 2 ** 20),
                                           ("1.5GiB", int(1.5 * 2 ** 30)), ("800MB", 800 * 2 ** 20),
                                           ("1000000", 10 ** 6)])
def test_memory_sizes(text, expected):
    assert inference.parse_memory_size(text) == expected


@pytest.mark.parametrize("text", ["lots", "0", "-1G", "4X"])
def test_bad_memory_sizes(text):
    with pytest.raises(inference.OptionError, match="^--memory_budget: "):
        inference.parse_memory_size(text)
