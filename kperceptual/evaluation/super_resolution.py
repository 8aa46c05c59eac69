"""Super-resolution evaluation as the paper reports it: what ``python -m kperceptual.evaluate``
does, as functions.

    from kperceptual.evaluation import super_resolution as evaluation

    pairs = evaluation.load_pairs("Set5/HR", "Set5/LR_x4", scale=4)
    results = evaluation.evaluate(["bicubic", "sr_x4_pixel", "sr_x4_feat"], pairs, scale=4)
    evaluation.write_report(results, pairs, "eval/set5_x4", title="Set5 x4")

Each model's output for each low-res input is scored against the high-res image with PSNR and
SSIM on the BT.601 luma, ``scale`` pixels cropped from each border (``kperceptual.evaluation.metrics``:
the convention that gives the paper's bicubic x4 Set5 numbers), and LPIPS (VGG, v0.1) on the RGB
image with the same border cropped. ``bicubic`` is the baseline (Pillow bicubic, as MATLAB's
``imresize``). Without a low-res folder, the inputs are made with the paper's degradation
(``kperceptual.data.degradation``: blur sigma 1.0, bicubic downsampling), the high-res images first
cropped to a multiple of ``scale``.

Models are applied with ``kperceptual.inference.Stylizer`` (large images run in windows within
the memory budget), with the paper's histogram matching for l_feat models unless
``histogram_match`` says otherwise. numpy, Pillow and Keras; TensorFlow only where a model is a
SavedModel without its Keras network.
"""

from __future__ import annotations

import dataclasses
import json
import os

import numpy as np
from PIL import Image, ImageDraw

from kperceptual.data import degradation
from kperceptual.imaging import images
from kperceptual.evaluation import metrics
from kperceptual.errors import FlagError

BICUBIC = "bicubic"
METRIC_NAMES = ("psnr", "ssim", "lpips")
GRID_CROP = 96  # high-res pixels per crop side in the comparison grid
GRID_ZOOM = 2  # crops are enlarged (nearest) by this much, so pixels can be seen


class EvaluationError(FlagError):
    """Bad evaluation inputs: ``--lr: ...``, naming the flag it concerns."""


@dataclasses.dataclass
class Pair:
    """One test image: its name (path below the HR folder), high-res and low-res uint8 RGB."""

    name: str
    high_res: np.ndarray
    low_res: np.ndarray


def _key(path: str, folder: str) -> str:
    """A file's name below ``folder`` without its extension: how HR and LR files pair up."""
    return os.path.splitext(os.path.relpath(path, folder))[0]


def load_pairs(hr_dir: str, lr_dir: str | None, scale: int,
               blur_sigma: float = degradation.BLUR_SIGMA) -> list[Pair]:
    """The (high-res, low-res) test pairs. With ``lr_dir``, its files must have the HR files'
    names (any image extension) and be exactly 1/``scale`` of their size (a HR image that is
    not a multiple of ``scale`` is cropped to the LR size times ``scale``, the benchmarks'
    convention); without it, low-res inputs are made with ``degradation.degrade``. Raises
    ``EvaluationError`` naming the flag and the file."""
    if scale < 2:
        raise EvaluationError("scale", f"must be at least 2, got {scale}")
    if not os.path.isdir(hr_dir):
        raise EvaluationError("hr", f"{hr_dir}: no such folder")
    hr_files = images.list_images(hr_dir)
    if not hr_files:
        raise EvaluationError("hr", f"{hr_dir}: no images in this folder or below it")
    lr_files = {}
    if lr_dir is not None:
        if not os.path.isdir(lr_dir):
            raise EvaluationError("lr", f"{lr_dir}: no such folder")
        lr_files = {_key(p, lr_dir): p for p in images.list_images(lr_dir)}
        hr_keys = {_key(p, hr_dir) for p in hr_files}
        missing = sorted(hr_keys - set(lr_files))
        extra = sorted(set(lr_files) - hr_keys)
        if missing or extra:
            what = (f"no low-res image for {missing[0]}" if missing
                    else f"{extra[0]} has no high-res image")
            more = len(missing) + len(extra) - 1
            raise EvaluationError("lr", f"{lr_dir} does not pair up with {hr_dir}: {what}"
                                        + (f" (and {more} more)" if more else "")
                                        + "; the two folders must hold the same file names")
    pairs = []
    for path in hr_files:
        key = _key(path, hr_dir)
        try:
            high = images.read_image(path)
        except images.ImageError as e:
            raise EvaluationError("hr", str(e)) from e
        if lr_dir is None:
            high = degradation.crop_to_multiple(high, scale)
            if min(high.shape[:2]) < scale:
                raise EvaluationError("hr", f"{path}: {high.shape[1]}x{high.shape[0]} is "
                                            f"smaller than the scale {scale}")
            low = degradation.degrade(high, scale, blur_sigma)
        else:
            try:
                low = images.read_image(lr_files[key])
            except images.ImageError as e:
                raise EvaluationError("lr", str(e)) from e
            h, w = low.shape[:2]
            if (h * scale, w * scale) != tuple(x - x % scale for x in high.shape[:2]):
                raise EvaluationError(
                    "lr", f"{lr_files[key]}: {w}x{h} is not the high-res {high.shape[1]}x"
                          f"{high.shape[0]} divided by --scale={scale} (expected "
                          f"{high.shape[1] // scale}x{high.shape[0] // scale})")
            high = high[:h * scale, :w * scale]
        if min(high.shape[:2]) < 2 * scale + metrics.SSIM_WINDOW_SIZE:
            raise EvaluationError("hr", f"{path}: {high.shape[1]}x{high.shape[0]} is too small "
                                        f"to score at --scale={scale} (the border crop of "
                                        f"{scale} and SSIM's {metrics.SSIM_WINDOW_SIZE}-pixel window leave "
                                        "nothing)")
        pairs.append(Pair(key, high, low))
    return pairs


def load_upscaler(spec: str, scale: int, histogram_match="auto",
                  models_dir: str | None = None, memory_budget=None, precision="float32"):
    """(name, function low-res uint8 -> high-res uint8) for ``spec``: ``bicubic`` or a model
    ``models.load_model`` takes. Raises ``EvaluationError`` if it cannot be loaded or does not
    upscale by ``scale``."""
    if spec == BICUBIC:
        return BICUBIC, lambda low: degradation.bicubic_upscale(low, scale)
    from kperceptual.inference import stylizer as inference

    try:
        stylizer = inference.Stylizer(spec, memory_budget=memory_budget,
                                      histogram_match=histogram_match, models_dir=models_dir,
                                      precision=precision)
    except (FileNotFoundError, OSError, ImportError) as e:
        raise EvaluationError("model", str(e)) from e
    except ValueError as e:  # includes inference.OptionError
        raise EvaluationError("model", f"{spec}: {e}") from e
    model_scale = stylizer.scale
    if model_scale != scale:
        raise EvaluationError("model", f"{spec} upscales x{model_scale:g}, not --scale={scale} "
                                       "(it was not trained for this scale)")
    return stylizer.model.name, stylizer.image


def score(output: np.ndarray, high_res: np.ndarray, scale: int, lpips=None) -> dict:
    """{"psnr", "ssim"[, "lpips"]} of one output against its high-res image."""
    result = {"psnr": metrics.psnr_y(output, high_res, scale),
              "ssim": metrics.ssim_y(output, high_res, scale)}
    if lpips is not None:
        b = scale
        result["lpips"] = float(lpips(output[b:-b, b:-b], high_res[b:-b, b:-b]))
    return result


def evaluate(model_specs, pairs: list[Pair], scale: int, *, use_lpips: bool = True,
             histogram_match="auto", models_dir: str | None = None, memory_budget=None,
             keep_outputs: bool = True, progress=None, precision: str = "float32") -> dict:
    """Scores every model on every pair. Returns {model name: {"images": {pair name: scores},
    "mean": scores, "outputs": {pair name: uint8 image} (if ``keep_outputs``)}} in the order
    of ``model_specs``. ``progress`` is called with one line per image."""
    upscalers = [load_upscaler(spec, scale, histogram_match, models_dir, memory_budget,
                               precision) for spec in model_specs]
    lpips = metrics.LPIPS() if use_lpips else None
    names = [name for name, _ in upscalers]
    if len(set(names)) != len(names):
        raise EvaluationError("model", f"two models have the same name ({', '.join(names)}); "
                                       "give each once")
    results = {}
    for name, upscale in upscalers:
        per_image, outputs = {}, {}
        for pair in pairs:
            try:
                output = upscale(pair.low_res)
            except ValueError as e:  # includes inference.InputError
                raise EvaluationError("lr", f"{pair.name}: {name} failed on its "
                                            f"{pair.low_res.shape[1]}x{pair.low_res.shape[0]} "
                                            f"input: {e}") from e
            if output.shape != pair.high_res.shape:
                raise EvaluationError("model", f"{name} made a {output.shape[1]}x"
                                               f"{output.shape[0]} output for {pair.name}, not "
                                               f"{pair.high_res.shape[1]}x"
                                               f"{pair.high_res.shape[0]}")
            per_image[pair.name] = score(output, pair.high_res, scale, lpips)
            if keep_outputs:
                outputs[pair.name] = output
            if progress:
                values = " ".join(f"{k} {v:.4f}" for k, v in per_image[pair.name].items())
                progress(f"{name} {pair.name}: {values}")
        mean = {k: float(np.mean([s[k] for s in per_image.values()]))
                for k in next(iter(per_image.values()))}
        results[name] = {"images": per_image, "mean": mean}
        if keep_outputs:
            results[name]["outputs"] = outputs
    return results


def default_title(hr_dir: str, scale: int) -> str:
    """'Set5 x4' for ``.../Set5/HR``: the folder's name, or its parent's if it is named HR."""
    path = os.path.abspath(hr_dir)
    name = os.path.basename(path)
    if name.upper() in ("HR", "GT", "HIGH_RES"):
        name = os.path.basename(os.path.dirname(path))
    return f"{name} x{scale}"


# -- reports ----------------------------------------------------------------------------------
def markdown_table(results: dict, title: str = "", per_image: bool = True) -> str:
    """The means (a row per model) and, if ``per_image``, a table per metric (a row per image,
    a column per model), in Markdown."""
    names = list(results)
    shown = [m for m in METRIC_NAMES if m in next(iter(results.values()))["mean"]]
    digits = {"psnr": 2, "ssim": 4, "lpips": 4}
    header = {"psnr": "PSNR (dB)", "ssim": "SSIM", "lpips": "LPIPS"}
    lines = [f"### {title}", ""] if title else []
    lines += ["| model | " + " | ".join(header[m] for m in shown) + " |",
              "|---|" + "---|" * len(shown)]
    for name in names:
        mean = results[name]["mean"]
        lines.append(f"| {name} | " + " | ".join(f"{mean[m]:.{digits[m]}f}" for m in shown)
                     + " |")
    if per_image:
        image_names = list(next(iter(results.values()))["images"])
        for m in shown:
            lines += ["", f"{header[m]} per image:", "",
                      "| image | " + " | ".join(names) + " |", "|---|" + "---|" * len(names)]
            for image in image_names:
                lines.append(f"| {image} | " + " | ".join(
                    f"{results[n]['images'][image][m]:.{digits[m]}f}" for n in names) + " |")
    return "\n".join(lines) + "\n"


def to_json(results: dict, **info) -> dict:
    """The results without the output images, plus ``info`` (scale, folders, ...)."""
    return {**info, "models": {name: {"mean": r["mean"], "images": r["images"]}
                               for name, r in results.items()}}


def detail_crop(high_res: np.ndarray, size: int, scale: int) -> tuple[int, int]:
    """(top, left) of the ``size`` x ``size`` high-res window with the most detail (largest
    luma gradient energy) among windows every ``max(scale, size // 8)`` pixels; the whole
    image where it is smaller."""
    y = metrics.y_channel(high_res)
    energy = np.abs(np.diff(y, axis=0))[:, :-1] + np.abs(np.diff(y, axis=1))[:-1, :]
    height, width = energy.shape
    size = min(size, height, width)
    integral = np.pad(energy.cumsum(0).cumsum(1), ((1, 0), (1, 0)))
    best, where = -1.0, (0, 0)
    step = max(scale, size // 8)
    for top in range(0, height - size + 1, step):
        for left in range(0, width - size + 1, step):
            total = (integral[top + size, left + size] - integral[top, left + size]
                     - integral[top + size, left] + integral[top, left])
            if total > best:
                best, where = total, (top, left)
    return where


def comparison_grid(results: dict, pairs: list[Pair], scale: int, crop: int = GRID_CROP,
                    zoom: int = GRID_ZOOM, max_images: int = 8) -> np.ndarray:
    """A uint8 RGB grid: a row per image (up to ``max_images``), a column per model and one for
    the high-res image, each the same detailed ``crop`` enlarged ``zoom`` times (nearest), with
    the column names and each output's whole-image PSNR/SSIM/LPIPS written above it."""
    names = list(results)
    label_height = 30
    cell = crop * zoom
    rows = pairs[:max_images]
    grid = Image.new("RGB", ((len(names) + 1) * cell, len(rows) * (cell + label_height)),
                     "white")
    draw = ImageDraw.Draw(grid)
    for r, pair in enumerate(rows):
        top, left = detail_crop(pair.high_res, crop, scale)
        size = min(crop, *pair.high_res.shape[:2])
        y0 = r * (cell + label_height)
        columns = [(n, results[n]["outputs"][pair.name], results[n]["images"][pair.name])
                   for n in names] + [("HR", pair.high_res, None)]
        for c, (name, image, scores) in enumerate(columns):
            piece = Image.fromarray(image[top:top + size, left:left + size])
            piece = piece.resize((size * zoom, size * zoom), Image.Resampling.NEAREST)
            grid.paste(piece, (c * cell, y0 + label_height))
            label = f"{name}  {pair.name}" if scores is None else (
                f"{name}\n{scores['psnr']:.2f} dB  {scores['ssim']:.3f}"
                + (f"  L {scores['lpips']:.3f}" if "lpips" in scores else ""))
            draw.multiline_text((c * cell + 3, y0 + 1), label, fill="black", spacing=1)
    return np.asarray(grid)


def report_paths(output_dir: str) -> dict:
    """{kind: path} of the files ``write_report`` writes (besides ``--save_images``)."""
    return {"markdown": os.path.join(output_dir, "results.md"),
            "json": os.path.join(output_dir, "results.json"),
            "grid": os.path.join(output_dir, "grid.png")}


def check_output(output_dir: str, overwrite: bool = False) -> None:
    """Raises ``EvaluationError`` before any work if the report would replace a file (without
    ``overwrite``) or ``output_dir`` is not a folder."""
    if os.path.exists(output_dir) and not os.path.isdir(output_dir):
        raise EvaluationError("output", f"{output_dir}: exists and is not a folder")
    if not overwrite:
        for path in report_paths(output_dir).values():
            if os.path.exists(path):
                raise EvaluationError("output", f"{path}: already exists (pass --overwrite to "
                                                "replace it)")


def write_report(results: dict, pairs: list[Pair], output_dir: str, *, scale: int,
                 title: str = "", info: dict | None = None, overwrite: bool = False,
                 save_images: bool = False) -> dict:
    """Writes ``results.md``, ``results.json`` and ``grid.png`` (and, with ``save_images``,
    ``<model>/<image>.png``) into ``output_dir``; returns {kind: path}. Existing files are
    never replaced unless ``overwrite``; all are checked before any is written."""
    paths = report_paths(output_dir)
    outputs = {}
    if save_images:
        for name, r in results.items():
            for image_name in r["outputs"]:
                outputs[(name, image_name)] = os.path.join(output_dir, name, image_name + ".png")
    check_output(output_dir, overwrite)
    if not overwrite:
        for path in outputs.values():
            if os.path.exists(path):
                raise EvaluationError("output", f"{path}: already exists (pass --overwrite to "
                                                "replace it)")
    os.makedirs(output_dir, exist_ok=True)
    from kperceptual.imaging import files

    with files.atomic_path(paths["markdown"]) as tmp, open(tmp, "w") as f:
        f.write(markdown_table(results, title))
    with files.atomic_path(paths["json"]) as tmp, open(tmp, "w") as f:
        json.dump(to_json(results, title=title, scale=scale, **(info or {})), f, indent=2)
    images.write_image(paths["grid"], comparison_grid(results, pairs, scale), overwrite=True)
    for (name, image_name), path in outputs.items():
        os.makedirs(os.path.dirname(path), exist_ok=True)
        images.write_image(path, results[name]["outputs"][image_name], overwrite=True)
    return paths
