"""Tiling: exact against the untiled run (instance norm), window plans, the memory budget."""

import dataclasses
import os
import subprocess
import sys

import numpy as np
import pytest

from helpers import REPO, psnr
from kperceptual.imaging import images
from kperceptual.inference import stylizer as inference
from kperceptual import networks
from kperceptual.inference import tiling


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
    stylizer = inference.Stylizer(tiny_network, memory_budget=resident + 40 * 2 ** 20)
    per_pixel = stylizer.forward_bytes_per_pixel
    assert per_pixel == 64 + 4.5 * 8 * 4
    assert stylizer.plan(200, 150) is None  # about 6 MB: whole
    plan = stylizer.plan(1200, 900)  # about 250 MB whole: windows that fit
    assert plan is not None and plan.exact
    assert stylizer.estimate_bytes(1200, 900, plan.window_pixels) <= stylizer.memory_budget
    with pytest.raises(inference.MemoryBudgetError, match="needs at least"):
        stylizer.plan(4000, 3000)  # its buffers alone exceed the budget


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
