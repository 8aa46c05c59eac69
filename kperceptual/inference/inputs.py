"""What a command is given to apply a model to: files, folders and glob patterns of images and
videos, expanded once each, and where each one's output goes."""

from __future__ import annotations

import glob
import os

from kperceptual.imaging import images
from kperceptual.inference import video


_GLOB_CHARACTERS = "*?["


def _under(path: str, folder: str) -> bool:
    return os.path.commonpath([os.path.realpath(path), folder]) == folder


def expand_inputs(inputs, output: str | None = None
                  ) -> tuple[list[tuple[str, str]], list[str]]:
    """``(path, path relative to its folder or glob base)`` for every input file, once each
    (the first way it was reached), and one error line per pattern that matched nothing.

    A name that exists is taken literally even if it holds glob characters. Files under
    ``output`` found in a folder or by a glob are skipped (earlier runs' outputs)."""
    found, errors = [], []
    extensions = images.IMAGE_EXTENSIONS + video.VIDEO_EXTENSIONS
    skip = os.path.realpath(output) if output else None
    for item in inputs:
        if os.path.isdir(item):
            found.extend((p, os.path.relpath(p, item))
                         for p in images.list_images(item, extensions)
                         if not (skip and _under(p, skip)))
        elif os.path.exists(item) or not any(c in item for c in _GLOB_CHARACTERS):
            found.append((item, os.path.basename(item)))
        else:
            base = item[:min(item.find(c) for c in _GLOB_CHARACTERS if c in item)]
            base = os.path.dirname(base) or "."
            matches = [p for p in sorted(glob.glob(item, recursive=True))
                       if os.path.isfile(p) and p.lower().endswith(extensions)
                       and not (skip and _under(p, skip))]
            found.extend((p, os.path.relpath(p, base)) for p in matches)
            if not matches:
                errors.append(f"{item}: no image or video files match")
    seen, unique = set(), []
    for path, relative in found:
        key = os.path.realpath(path)
        if key not in seen:
            seen.add(key)
            unique.append((path, relative))
    return unique, errors


def output_path(output: str, relative: str, model_name: str) -> str:
    stem = os.path.splitext(relative)[0]
    return os.path.join(output, f"{stem}_{model_name}"
                        f"{'.mp4' if video.is_video(relative) else '.png'}")
