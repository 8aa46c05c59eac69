"""``python -m kperceptual.evaluate`` as a user runs it: a real evaluation with LPIPS, its report
files and numbers, refusing to overwrite, the degradation when no LR folder is given, and bad
inputs (one line, exit status 2)."""

import json
import os
import re
import subprocess
import sys

import numpy as np
import pytest

from helpers import REPO
from kperceptual.data import degradation
from kperceptual.evaluation import super_resolution as evaluation
from kperceptual.imaging import images
from kperceptual.evaluation import metrics

NAMES = ("a", "b")  # a: 48 high x 64 wide, b: 64 high x 48 wide


def run_evaluate(args, cwd, timeout=180):
    env = dict(os.environ, PYTHONPATH=REPO, TF_CPP_MIN_LOG_LEVEL="3")
    return subprocess.run([sys.executable, "-m", "kperceptual.evaluate", *args], cwd=cwd,
                          env=env, capture_output=True, text=True, timeout=timeout)


# TensorFlow's native logger writes these before any Python code can quieten it (even with
# TF_CPP_MIN_LOG_LEVEL=3), in every process that loads a Keras model; they are not the program's.
TF_NATIVE_LOG = re.compile(r"^([IWEF]\d{4} [\d:.]+ +\d+ [\w.]+:\d+\] "
                           r"|WARNING: All log messages before absl::InitializeLog\(\))")


def one_line(result):
    """The one line the program wrote to stderr (besides TensorFlow's native log)."""
    lines = [line for line in result.stderr.splitlines()
             if line.strip() and not TF_NATIVE_LOG.match(line)]
    assert len(lines) == 1, result.stderr
    assert lines[0].startswith("kperceptual.evaluate: "), lines[0]
    return lines[0]


@pytest.fixture(scope="module")
def fixtures(tmp_path_factory, photos):
    """HR and LR folders of two small real images, and tiny untrained x4 and x2 networks."""
    import keras

    from kperceptual import networks

    root = tmp_path_factory.mktemp("evaluate")
    hr_dir, lr_dir = root / "HR", root / "LR_x4"
    hr_dir.mkdir()
    lr_dir.mkdir()
    hr = {"a": images.resize_and_center_crop(photos["astronaut"], 128)[20:68, 40:104],
          "b": images.resize_and_center_crop(photos["chelsea"], 128)[30:94, 50:98]}
    assert hr["a"].shape == (48, 64, 3) and hr["b"].shape == (64, 48, 3)
    lr = {}
    for name, image in hr.items():
        images.write_image(str(hr_dir / f"{name}.png"), image)
        lr[name] = degradation.degrade(image, 4)
        images.write_image(str(lr_dir / f"{name}.png"), lr[name])
    keras.utils.set_random_seed(0)  # the same untrained networks on every run
    x4 = str(root / "tiny_x4.keras")
    networks.SuperResolutionNetwork(4, filters=8, num_residual_blocks=1, loss="feat").save(x4)
    x2 = str(root / "tiny_x2.keras")
    networks.SuperResolutionNetwork(2, filters=8, num_residual_blocks=1, loss="feat").save(x2)
    return {"root": root, "hr_dir": str(hr_dir), "lr_dir": str(lr_dir), "hr": hr, "lr": lr,
            "x4": x4, "x2": x2}


def _find(grid, block):
    """Whether ``block`` occurs in ``grid`` at some row, in the column range it is given."""
    h = block.shape[0]
    return any(np.array_equal(grid[y:y + h], block) for y in range(grid.shape[0] - h + 1))


@pytest.mark.slow
def test_evaluation_report_numbers_grid_and_no_overwrite(fixtures, tmp_path, vgg_weights_path):
    f = fixtures
    args = [f"--model=bicubic,{f['x4']}", f"--hr={f['hr_dir']}", f"--lr={f['lr_dir']}",
            "--scale=4", "--output=out"]
    result = run_evaluate(args, tmp_path)
    assert result.returncode == 0, result.stderr[-3000:]
    out = tmp_path / "out"

    report = json.loads((out / "results.json").read_text())
    assert list(report["models"]) == ["bicubic", "tiny_x4"]
    assert report["scale"] == 4 and report["blur_sigma"] is None
    assert report["lr"] == f["lr_dir"] and report["hr"] == f["hr_dir"]
    assert report["title"] == f"{f['root'].name} x4"  # the HR folder's parent, and the scale
    for name, model in report["models"].items():
        assert set(model["images"]) == set(NAMES), name
        for image in NAMES:
            scores = model["images"][image]
            assert set(scores) == {"psnr", "ssim", "lpips"}, (name, image)
            assert all(np.isfinite(v) for v in scores.values())
            # SSIM lies in [-1, 1]: an untrained network's output can anti-correlate with
            # the truth (a clean clone once drew one at -0.017).
            assert -1 <= scores["ssim"] <= 1 and scores["lpips"] >= 0
        for metric in ("psnr", "ssim", "lpips"):
            assert model["mean"][metric] == pytest.approx(
                np.mean([model["images"][i][metric] for i in NAMES]))
    for image in NAMES:  # the baseline's numbers, recomputed here
        upscaled = degradation.bicubic_upscale(f["lr"][image], 4)
        bicubic = report["models"]["bicubic"]["images"][image]
        assert bicubic["psnr"] == pytest.approx(metrics.psnr_y(upscaled, f["hr"][image], 4),
                                                abs=1e-9)
        assert bicubic["ssim"] == pytest.approx(metrics.ssim_y(upscaled, f["hr"][image], 4),
                                                abs=1e-9)
        # an untrained network is far worse than bicubic
        assert report["models"]["tiny_x4"]["images"][image]["psnr"] < bicubic["psnr"]

    markdown = (out / "results.md").read_text()
    assert markdown.startswith(f"### {report['title']}\n")
    for name in ("bicubic", "tiny_x4"):
        mean = report["models"][name]["mean"]
        assert (f"| {name} | {mean['psnr']:.2f} | {mean['ssim']:.4f} | {mean['lpips']:.4f} |"
                in markdown), markdown
    assert "PSNR (dB)" in markdown and "LPIPS" in markdown
    for image in NAMES:
        assert f"| {image} |" in markdown

    grid = images.read_image(str(out / "grid.png"))
    cell = evaluation.GRID_CROP * evaluation.GRID_ZOOM
    assert grid.shape[1] == 3 * cell  # two models and the HR column
    assert grid.shape[0] >= len(NAMES) * cell
    for image in NAMES:  # each row shows the same detailed crop, zoomed, in every column
        hr = f["hr"][image]
        top, left = evaluation.detail_crop(hr, evaluation.GRID_CROP, 4)
        size = min(evaluation.GRID_CROP, *hr.shape[:2])
        zoom = lambda x: np.repeat(np.repeat(  # noqa: E731
            x[top:top + size, left:left + size], evaluation.GRID_ZOOM, 0),
            evaluation.GRID_ZOOM, 1)
        width = size * evaluation.GRID_ZOOM
        assert _find(grid[:, 2 * cell:2 * cell + width], zoom(hr)), image
        bicubic = degradation.bicubic_upscale(f["lr"][image], 4)
        assert _find(grid[:, :width], zoom(bicubic)), image

    # Again without --overwrite: refused in one line naming the file, nothing changed.
    before = {p: (p.read_bytes(), p.stat().st_mtime_ns) for p in out.iterdir()}
    again = run_evaluate([*args[:-1], "--output=out", "--nolpips"], tmp_path)
    assert again.returncode == 2, again.stderr[-2000:]
    line = [line for line in again.stderr.splitlines() if line.startswith("kperceptual.")]
    assert len(line) == 1 and "--output: " in line[0] and "already exists" in line[0], \
        again.stderr
    assert os.path.join("out", "results.md") in line[0]
    assert again.stderr.strip().splitlines()[-1] == line[0]  # after the progress lines
    assert {p: (p.read_bytes(), p.stat().st_mtime_ns) for p in out.iterdir()} == before


def test_without_lr_the_paper_degradation_makes_the_inputs(fixtures, tmp_path):
    f = fixtures
    result = run_evaluate(["--model=bicubic", f"--hr={f['hr_dir']}", "--scale=4",
                           "--output=out", "--nolpips"], tmp_path)
    assert result.returncode == 0, result.stderr[-3000:]
    report = json.loads((tmp_path / "out" / "results.json").read_text())
    assert report["blur_sigma"] == 1.0 and report["lr"] is None
    for image in NAMES:
        scores = report["models"]["bicubic"]["images"][image]
        assert set(scores) == {"psnr", "ssim"}  # --nolpips
        hr = f["hr"][image]  # already a multiple of 4
        upscaled = degradation.bicubic_upscale(degradation.degrade(hr, 4, 1.0), 4)
        assert scores["psnr"] == pytest.approx(metrics.psnr_y(upscaled, hr, 4), abs=1e-9)
    assert "LPIPS" not in (tmp_path / "out" / "results.md").read_text()


def _lr_copy(fixtures, tmp_path, drop=None, replace=None):
    """A copy of the LR folder without the image ``drop`` and with ``replace`` ({name: image})."""
    lr_dir = tmp_path / "lr"
    lr_dir.mkdir()
    for name in NAMES:
        if name != drop:
            image = (replace or {}).get(name, fixtures["lr"][name])
            images.write_image(str(lr_dir / f"{name}.png"), image)
    return str(lr_dir)


@pytest.mark.slow
@pytest.mark.parametrize("case", ["lr_missing_file", "lr_wrong_size", "x2_model_for_scale_4",
                                  "missing_hr_folder", "unknown_model"])
def test_bad_inputs_exit_2_with_one_line(fixtures, tmp_path, case):
    f = fixtures
    model, hr_dir, lr_dir = "bicubic", f["hr_dir"], f["lr_dir"]
    if case == "lr_missing_file":
        lr_dir = _lr_copy(f, tmp_path, drop="b")
        expected = ["--lr: ", lr_dir, "no low-res image for b"]
    elif case == "lr_wrong_size":  # b's LR should be 12x16 (W x H); give it 13x16
        wrong = images.resize(f["lr"]["b"], 16, 13)
        lr_dir = _lr_copy(f, tmp_path, replace={"b": wrong})
        expected = ["--lr: ", os.path.join(lr_dir, "b.png"), "13x16", "expected 12x16"]
    elif case == "x2_model_for_scale_4":
        model = f"bicubic,{f['x2']}"
        expected = ["--model: ", f["x2"], "x2", "--scale=4"]
    elif case == "missing_hr_folder":
        hr_dir = str(tmp_path / "no_such_folder")
        expected = ["--hr: ", hr_dir, "no such folder"]
    else:
        model = "bicubic,no_such_model"
        expected = ["--model: ", "no_such_model"]
    result = run_evaluate([f"--model={model}", f"--hr={hr_dir}", f"--lr={lr_dir}", "--scale=4",
                           "--output=out", "--nolpips"], tmp_path)
    assert result.returncode == 2, result.stderr[-2000:]
    line = one_line(result)
    for part in expected:
        assert part in line, (part, line)
    assert not (tmp_path / "out").exists()


def test_an_image_too_small_to_score_is_named(tmp_path):
    hr = tmp_path / "HR"
    hr.mkdir()
    images.write_image(str(hr / "tiny.png"), np.full((16, 20, 3), 128, np.uint8))
    with pytest.raises(evaluation.EvaluationError, match=r"^--hr: .*tiny\.png: 20x16 is too small"):
        evaluation.load_pairs(str(hr), None, 4)
