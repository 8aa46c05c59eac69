"""Image I/O for every command: read, decode, resize, crop and write RGB images.

Images are numpy ``uint8`` arrays ``(H, W, 3)`` in RGB. Reading respects EXIF orientation and
converts greyscale, palette, CMYK, 16-bit and alpha images to RGB. Every failure raises
``ImageError`` whose message starts with the file's name and says what is wrong, in one line.

Besides file paths, an image may be named ``skimage:NAME``: one of the CC0 / public-domain photos
bundled in the scikit-image wheel (``astronaut``, ``chelsea``, ``coffee``, ...), so examples and
the quick-start job run with no data of the user's.
"""

from __future__ import annotations

import io
import os
import warnings

import numpy as np
from PIL import Image, ImageOps

IMAGE_EXTENSIONS = (".jpg", ".jpeg", ".png", ".bmp", ".webp")
SKIMAGE_PREFIX = "skimage:"
# Colour photos bundled with scikit-image (CC0 / public domain), used as the embedded default.
SKIMAGE_TRAINING_PHOTOS = ("astronaut", "chelsea", "coffee", "rocket", "stereo_motorcycle")
SKIMAGE_PHOTOS = SKIMAGE_TRAINING_PHOTOS + ("hubble_deep_field", "immunohistochemistry", "retina",
                                            "colorwheel")


class ImageError(ValueError):
    """An image could not be read or written; the message names the file."""


def _to_rgb(image: Image.Image) -> np.ndarray:
    image = ImageOps.exif_transpose(image)
    if image.mode in ("I;16", "I;16B", "I;16L", "I"):
        array = np.asarray(image, dtype=np.float64)
        top = 65535.0 if array.max() > 255 else 255.0
        return np.repeat(np.clip(np.round(array * 255.0 / top), 0, 255).astype(np.uint8)[..., None],
                         3, axis=-1)
    if image.mode == "F":
        array = np.asarray(image, dtype=np.float64)
        array = np.clip(np.round(array * (255.0 if array.max() <= 1.0 else 1.0)), 0, 255)
        return np.repeat(array.astype(np.uint8)[..., None], 3, axis=-1)
    if image.mode != "RGB":
        image = image.convert("RGBA" if "A" in image.getbands() or "transparency" in image.info
                              else "RGB").convert("RGB")
    return np.asarray(image, dtype=np.uint8)


def decode_image(data: bytes, name: str = "<bytes>") -> np.ndarray:
    """Decodes encoded image bytes to RGB uint8; ``name`` is used in error messages."""
    if not data:
        raise ImageError(f"{name}: empty file (0 bytes)")
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("error", Image.DecompressionBombWarning)
            with Image.open(io.BytesIO(data)) as image:
                image.load()
                array = _to_rgb(image)
    except (Image.DecompressionBombError, Image.DecompressionBombWarning) as e:
        raise ImageError(f"{name}: too many pixels for a safe decode ({e})") from e
    except Image.UnidentifiedImageError as e:
        raise ImageError(f"{name}: not a readable image (unknown or damaged format)") from e
    except (OSError, ValueError, SyntaxError) as e:
        raise ImageError(f"{name}: not a readable image ({e})") from e
    if array.shape[0] == 0 or array.shape[1] == 0:
        raise ImageError(f"{name}: image has zero size")
    return array


def skimage_photo(name: str) -> np.ndarray:
    """One of scikit-image's bundled photos as RGB uint8."""
    if name not in SKIMAGE_PHOTOS:
        raise ImageError(f"{SKIMAGE_PREFIX}{name}: unknown bundled photo; choose from "
                         f"{', '.join(SKIMAGE_PHOTOS)}")
    from skimage import data as skdata

    array = getattr(skdata, name)()
    if isinstance(array, tuple):  # stereo pairs
        array = array[0]
    array = np.asarray(array)
    if array.ndim == 2:
        array = np.repeat(array[..., None], 3, axis=-1)
    if array.dtype != np.uint8:
        array = np.clip(np.round(array * (255.0 if array.max() <= 1.0 else 1.0)), 0, 255)
    return array[..., :3].astype(np.uint8)


def read_image(path: str) -> np.ndarray:
    """Reads an image file (or ``skimage:NAME``) as RGB uint8 (H, W, 3)."""
    path = os.fspath(path)
    if path.startswith(SKIMAGE_PREFIX):
        return skimage_photo(path[len(SKIMAGE_PREFIX):])
    try:
        with open(path, "rb") as f:
            data = f.read()
    except OSError as e:
        raise ImageError(f"{path}: cannot open ({e.strerror or e})") from e
    return decode_image(data, path)


def image_source_exists(path: str) -> bool:
    return path.startswith(SKIMAGE_PREFIX) or os.path.isfile(path)


def list_images(folder: str) -> list[str]:
    """Image files below ``folder`` (recursive), sorted, by extension."""
    found = []
    for root, dirs, files in os.walk(folder):
        dirs.sort()
        found.extend(os.path.join(root, f) for f in sorted(files)
                     if f.lower().endswith(IMAGE_EXTENSIONS))
    return found


def _resize(image: np.ndarray, height: int, width: int) -> np.ndarray:
    if image.shape[:2] == (height, width):
        return image
    return np.asarray(Image.fromarray(image).resize((width, height), Image.Resampling.BICUBIC,
                                                    reducing_gap=3.0))


def resize_long_side(image: np.ndarray, size: int) -> np.ndarray:
    """Resizes so the longer side is ``size``, keeping the aspect ratio."""
    h, w = image.shape[:2]
    scale = size / max(h, w)
    return _resize(image, max(1, round(h * scale)), max(1, round(w * scale)))


def resize_and_center_crop(image: np.ndarray, size: int) -> np.ndarray:
    """Resizes so the shorter side is ``size``, then crops the central ``size`` x ``size``."""
    h, w = image.shape[:2]
    scale = size / min(h, w)
    nh, nw = max(size, round(h * scale)), max(size, round(w * scale))
    image = _resize(image, nh, nw)
    top, left = (nh - size) // 2, (nw - size) // 2
    return image[top:top + size, left:left + size]


def to_uint8(pixels) -> np.ndarray:
    """Float pixels in [0, 255] -> uint8, rounded and clipped."""
    return np.clip(np.round(np.asarray(pixels, dtype=np.float32)), 0, 255).astype(np.uint8)


def write_image(path: str, image, overwrite: bool = False) -> str:
    """Writes an RGB image (uint8, or float in [0, 255]); never replaces a file unless asked."""
    if os.path.exists(path) and not overwrite:
        raise ImageError(f"{path}: already exists (pass overwrite to replace it)")
    image = np.asarray(image)
    if image.dtype != np.uint8:
        image = to_uint8(image)
    folder = os.path.dirname(os.path.abspath(path))
    root, ext = os.path.splitext(path)
    tmp = f"{root}.tmp-{os.getpid()}{ext}"
    try:
        os.makedirs(folder, exist_ok=True)
        Image.fromarray(image).save(tmp)
        os.replace(tmp, path)
    except (OSError, ValueError) as e:
        raise ImageError(f"{path}: cannot write ({e})") from e
    finally:
        if os.path.exists(tmp):
            os.remove(tmp)
    return path


def size_content_and_style(content: np.ndarray, style: np.ndarray, image_size: int = 0,
                           style_size: int = 0) -> tuple[np.ndarray, np.ndarray]:
    """The content with its longer side ``image_size`` (0: as it is), and the style with its
    longer side ``style_size`` (0: the same as the content's)."""
    if image_size:
        content = resize_long_side(content, image_size)
    return content, resize_long_side(style, style_size or max(content.shape[:2]))
