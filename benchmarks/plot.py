"""A small line chart with logarithmic axes, drawn with Pillow (no plotting library needed)."""

from __future__ import annotations

import math

from PIL import Image, ImageDraw, ImageFont

COLOURS = ((31, 119, 180), (255, 127, 14), (44, 160, 44), (214, 39, 40), (148, 103, 189),
           (140, 86, 75), (227, 119, 194), (127, 127, 127))


def _ticks(low: float, high: float) -> list[float]:
    """1, 2, 5 x powers of ten between low and high."""
    ticks = []
    for exponent in range(math.floor(math.log10(low)), math.ceil(math.log10(high)) + 1):
        for m in (1, 2, 5):
            value = m * 10.0 ** exponent
            if low <= value <= high:
                ticks.append(value)
    return ticks


def _label(value: float) -> str:
    return f"{value:g}"


def log_log_chart(path: str, series: dict, title: str, x_label: str, y_label: str,
                  hline: float | None = None, hline_label: str = "", size=(900, 560)) -> str:
    """Writes a PNG chart of ``series`` ({name: [(x, y), ...]}, all values > 0) with log axes."""
    font = ImageFont.load_default(size=15)
    small = ImageFont.load_default(size=13)
    width, height = size
    left, right, top, bottom = 80, 220, 70, 60
    xs = [x for points in series.values() for x, _ in points]
    ys = [y for points in series.values() for _, y in points] + ([hline] if hline else [])
    x_lo, x_hi = min(xs), max(xs)
    y_lo, y_hi = min(ys) / 1.1, max(ys) * 1.1

    def px(x, y):
        fx = (math.log(x) - math.log(x_lo)) / (math.log(x_hi) - math.log(x_lo))
        fy = (math.log(y) - math.log(y_lo)) / (math.log(y_hi) - math.log(y_lo))
        return left + fx * (width - left - right), top + (1 - fy) * (height - top - bottom)

    image = Image.new("RGB", size, "white")
    draw = ImageDraw.Draw(image)
    draw.text((10, 12), title, fill="black", font=font)
    for x in _ticks(x_lo, x_hi):
        gx, _ = px(x, y_lo)
        draw.line([(gx, top), (gx, height - bottom)], fill=(225, 225, 225))
        draw.text((gx, height - bottom + 6), _label(x), fill="black", font=small, anchor="mt")
    for y in _ticks(y_lo, y_hi):
        _, gy = px(x_lo, y)
        draw.line([(left, gy), (width - right, gy)], fill=(225, 225, 225))
        draw.text((left - 6, gy), _label(y), fill="black", font=small, anchor="rm")
    draw.rectangle([(left, top), (width - right, height - bottom)], outline="black")
    draw.text(((left + width - right) / 2, height - 20), x_label, fill="black", font=font,
              anchor="mm")
    draw.text((10, top - 24), y_label, fill="black", font=small)
    if hline:
        _, gy = px(x_lo, hline)
        for start in range(left, width - right, 12):
            draw.line([(start, gy), (min(start + 6, width - right), gy)], fill="black", width=2)
        draw.text((width - right + 8, gy), hline_label, fill="black", font=small, anchor="lm")
    for i, (name, points) in enumerate(series.items()):
        colour = COLOURS[i % len(COLOURS)]
        draw.line([px(x, y) for x, y in points], fill=colour, width=2)
        ly = top + 10 + 20 * i + (40 if hline else 0)
        draw.line([(width - right + 8, ly), (width - right + 30, ly)], fill=colour, width=3)
        draw.text((width - right + 36, ly), name, fill="black", font=small, anchor="lm")
    from kperceptual.imaging import files

    with files.atomic_path(path) as tmp:
        image.save(tmp)
    return path
