"""Image I/O for every command: read, decode, resize, crop and write RGB images.

Images are numpy ``uint8`` arrays ``(H, W, 3)`` in RGB. Reading respects EXIF orientation and
converts greyscale, palette, CMYK, 16-bit and alpha images to RGB (``read_image_and_alpha`` also
returns the alpha channel, for outputs that carry it). Every failure raises
``ImageError`` whose message starts with the file's name and says what is wrong, in one line.

Besides file paths, an image may be named ``skimage:NAME``: one of the CC0 / public-domain photos
bundled in the scikit-image wheel (``astronaut``, ``chelsea``, ``coffee``, ...), so examples and
the quick-start job run with no data of the user's.
"""

from __future__ import annotations

import io
import os
import stat
import warnings

import numpy as np
from PIL import Image, ImageOps

from kperceptual.errors import FlagError, InputError
from kperceptual.imaging import files

IMAGE_EXTENSIONS = (".jpg", ".jpeg", ".png", ".bmp", ".webp", ".tif", ".tiff", ".gif")
SKIMAGE_PREFIX = "skimage:"
# The largest file any command reads as an image: far above any photo, far below a machine's
# memory (a link to /dev/zero named .png stops here, not at a MemoryError).
MAX_FILE_BYTES = 512 * 1024 * 1024
# Colour photos bundled with scikit-image (CC0 / public domain), used as the embedded default.
SKIMAGE_TRAINING_PHOTOS = ("astronaut", "chelsea", "coffee", "rocket", "stereo_motorcycle")
SKIMAGE_PHOTOS = SKIMAGE_TRAINING_PHOTOS + ("hubble_deep_field", "immunohistochemistry", "retina",
                                            "colorwheel")


class ImageError(InputError):
    """An image could not be read or written; the message names the file."""


def _has_alpha(image: Image.Image) -> bool:
    return "A" in image.getbands() or "transparency" in image.info


def _alpha(image: Image.Image) -> np.ndarray | None:
    """The alpha channel as uint8 (H, W), or None for an image without one (or a fully opaque
    one)."""
    if not _has_alpha(image):
        return None
    alpha = np.asarray(image.convert("RGBA"), dtype=np.uint8)[..., 3]
    return None if alpha.min() == 255 else alpha


def _to_rgb(image: Image.Image) -> np.ndarray:
    if image.mode.startswith("I;16") or image.mode == "I":
        # The range comes from the mode, not the pixels: a dark 16-bit image stays dark. 32-bit
        # "I" images are 16-bit files as Pillow opened them (PNG, TIFF).
        array = np.asarray(image, dtype=np.float64)
        top = 65535.0
        return np.repeat(np.clip(np.round(array * 255.0 / top), 0, 255).astype(np.uint8)[..., None],
                         3, axis=-1)
    if image.mode == "F":
        array = np.asarray(image, dtype=np.float64)
        array = np.clip(np.round(array * (255.0 if array.max() <= 1.0 else 1.0)), 0, 255)
        return np.repeat(array.astype(np.uint8)[..., None], 3, axis=-1)
    if image.mode != "RGB":
        image = image.convert("RGBA" if _has_alpha(image) else "RGB").convert("RGB")
    return np.asarray(image, dtype=np.uint8)


def decode_image(data: bytes, name: str = "<bytes>") -> np.ndarray:
    """Decodes encoded image bytes to RGB uint8; ``name`` is used in error messages."""
    return decode_image_and_alpha(data, name)[0]


def decode_image_and_alpha(data: bytes, name: str = "<bytes>"
                           ) -> tuple[np.ndarray, np.ndarray | None]:
    """Decodes encoded image bytes to RGB uint8 (H, W, 3) and its alpha channel, uint8 (H, W),
    or None where the image has none (or is fully opaque); both EXIF-oriented."""
    if not data:
        raise ImageError(f"{name}: empty file (0 bytes)")
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("error", Image.DecompressionBombWarning)
            with Image.open(io.BytesIO(data)) as image:
                image.load()
                image = ImageOps.exif_transpose(image)
                array, alpha = _to_rgb(image), _alpha(image)
    except (Image.DecompressionBombError, Image.DecompressionBombWarning) as e:
        raise ImageError(f"{name}: too many pixels for a safe decode ({e})") from e
    except Image.UnidentifiedImageError as e:
        raise ImageError(f"{name}: not a readable image (unknown or damaged format)") from e
    except (OSError, ValueError, SyntaxError) as e:
        raise ImageError(f"{name}: not a readable image ({e})") from e
    if array.shape[0] == 0 or array.shape[1] == 0:
        raise ImageError(f"{name}: image has zero size")
    return array, alpha


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


def image_stem(path: str) -> str:
    """A name for an image path: ``tubingen`` for ``.../tubingen.jpg``, ``astronaut`` for
    ``skimage:astronaut``."""
    return (path[len(SKIMAGE_PREFIX):] if path.startswith(SKIMAGE_PREFIX)
            else os.path.splitext(os.path.basename(path))[0])


def read_image(path: str) -> np.ndarray:
    """Reads an image file (or ``skimage:NAME``) as RGB uint8 (H, W, 3)."""
    return read_image_and_alpha(path)[0]


def read_image_and_alpha(path: str) -> tuple[np.ndarray, np.ndarray | None]:
    """Reads an image file (or ``skimage:NAME``): RGB uint8 (H, W, 3) and alpha uint8 (H, W) or
    None (see ``decode_image_and_alpha``)."""
    path = os.fspath(path)
    if path.startswith(SKIMAGE_PREFIX):
        return skimage_photo(path[len(SKIMAGE_PREFIX):]), None
    return decode_image_and_alpha(read_regular_file(path, MAX_FILE_BYTES, ImageError), path)


_FILE_KINDS = ((stat.S_ISDIR, "a folder"), (stat.S_ISFIFO, "a named pipe (FIFO)"),
               (stat.S_ISCHR, "a character device"), (stat.S_ISBLK, "a block device"),
               (stat.S_ISSOCK, "a socket"))


def _open_regular(path: str, max_bytes: int, error):
    """``path`` (links followed) opened for reading, non-blocking, after checking on the open
    descriptor that it is a regular file of at most ``max_bytes`` (nothing can swap it in
    between); raises ``error`` (one line naming ``path``) for a FIFO, a device (/dev/zero), a
    socket, a folder or a larger file, without blocking or reading it."""
    try:
        fd = os.open(path, os.O_RDONLY | getattr(os, "O_NONBLOCK", 0))
    except OSError as e:
        raise error(f"{path}: cannot open ({e.strerror or e})") from e
    f = os.fdopen(fd, "rb")
    mode = os.fstat(fd)
    if not stat.S_ISREG(mode.st_mode):
        f.close()
        kind = next((k for test, k in _FILE_KINDS if test(mode.st_mode)), "not a file")
        raise error(f"{path}: {kind}, not a regular file; not read")
    if mode.st_size > max_bytes:
        f.close()
        raise error(f"{path}: {mode.st_size} bytes, over the limit of {max_bytes}; not read")
    return f


def check_regular_file(path: str, max_bytes: int, error=OSError) -> None:
    """Raises ``error`` unless ``path`` is a regular file of at most ``max_bytes`` (for files
    another library reads, such as videos)."""
    _open_regular(path, max_bytes, error).close()


def read_regular_file(path: str, max_bytes: int, error=OSError) -> bytes:
    """The bytes of ``path``, a regular file of at most ``max_bytes`` (see ``_open_regular``)."""
    with _open_regular(path, max_bytes, error) as f:
        try:
            data = f.read(max_bytes + 1)
        except OSError as e:
            raise error(f"{path}: cannot read ({e.strerror or e})") from e
    if len(data) > max_bytes:  # it grew while being read
        raise error(f"{path}: over the limit of {max_bytes} bytes; not read")
    return data


def image_source_exists(path: str) -> bool:
    return path.startswith(SKIMAGE_PREFIX) or os.path.isfile(path)


def list_images(folder: str, extensions: tuple[str, ...] = IMAGE_EXTENSIONS) -> list[str]:
    """Files below ``folder`` (recursive) whose names end in one of ``extensions`` (any case),
    sorted."""
    found = []
    for root, dirs, names in os.walk(folder):
        dirs.sort()
        found.extend(os.path.join(root, f) for f in sorted(names)
                     if f.lower().endswith(extensions))
    return found


def resize(image: np.ndarray, height: int, width: int) -> np.ndarray:
    """Bicubic resize of a uint8 image (H, W, 3) or single channel (H, W)."""
    if image.shape[:2] == (height, width):
        return image
    return np.asarray(Image.fromarray(image).resize((width, height), Image.Resampling.BICUBIC,
                                                    reducing_gap=3.0))


def long_side_size(height: int, width: int, size: int) -> tuple[int, int]:
    """(height, width) scaled so the longer side is ``size``, keeping the aspect ratio."""
    scale = size / max(height, width)
    return max(1, round(height * scale)), max(1, round(width * scale))


def resize_long_side(image: np.ndarray, size: int) -> np.ndarray:
    """Resizes so the longer side is ``size``, keeping the aspect ratio."""
    return resize(image, *long_side_size(*image.shape[:2], size))


def resize_and_center_crop(image: np.ndarray, size: int) -> np.ndarray:
    """Resizes so the shorter side is ``size``, then crops the central ``size`` x ``size``."""
    h, w = image.shape[:2]
    scale = size / min(h, w)
    nh, nw = max(size, round(h * scale)), max(size, round(w * scale))
    image = resize(image, nh, nw)
    top, left = (nh - size) // 2, (nw - size) // 2
    return image[top:top + size, left:left + size]


def to_uint8(pixels) -> np.ndarray:
    """Float pixels in [0, 255] -> uint8, rounded and clipped."""
    return np.clip(np.round(np.asarray(pixels, dtype=np.float32)), 0, 255).astype(np.uint8)


# Formats that hold no alpha: an RGBA image is written as its RGB there.
NO_ALPHA_EXTENSIONS = (".jpg", ".jpeg", ".bmp")
JPEG_QUALITY = 95  # Pillow's default, 75, blurs the fine strokes a style network paints


def write_image(path: str, image, overwrite: bool = False) -> str:
    """Writes an RGB or RGBA image (uint8, or float in [0, 255]) in the format its extension
    names (RGBA as RGB where the format has no alpha; JPEG at quality ``JPEG_QUALITY``); never
    replaces a file unless asked."""
    if os.path.exists(path) and not overwrite:
        raise ImageError(f"{path}: already exists (pass overwrite to replace it)")
    image = np.asarray(image)
    if image.dtype != np.uint8:
        image = to_uint8(image)
    if image.ndim == 3 and image.shape[-1] == 4 and path.lower().endswith(NO_ALPHA_EXTENSIONS):
        image = image[..., :3]
    options = {"quality": JPEG_QUALITY} if path.lower().endswith((".jpg", ".jpeg")) else {}
    try:
        with files.atomic_path(path, overwrite=overwrite) as tmp:
            Image.fromarray(image).save(tmp, **options)
    except FileExistsError as e:
        raise ImageError(f"{path}: already exists (pass overwrite to replace it)") from e
    except (OSError, ValueError) as e:
        raise ImageError(f"{path}: cannot write ({e})") from e
    return path


def size_content_and_style(content: np.ndarray, style: np.ndarray, image_size: int = 0,
                           style_size: int = 0) -> tuple[np.ndarray, np.ndarray]:
    """The content with its longer side ``image_size`` (0: as it is), and the style with its
    longer side ``style_size`` (0: the same as the content's)."""
    if image_size:
        content = resize_long_side(content, image_size)
    return content, resize_long_side(style, style_size or max(content.shape[:2]))


def fit_to_shape(image: np.ndarray, height: int, width: int, tolerance: float = 0.02):
    """``image`` resized to ``height`` x ``width`` if its aspect ratio is within ``tolerance``
    (relative) of that shape's, else None: a resize that would distort the picture."""
    h, w = image.shape[:2]
    if (h, w) == (height, width):
        return image
    if abs((w / h) / (width / height) - 1.0) > tolerance:
        return None
    return resize(image, height, width)


def read_flag_image(config, field: str, path: str | None = None) -> np.ndarray:
    """The image a flag names (``config.<field>``, or ``path`` given for it); raises
    ``FlagError`` naming the flag, the file and what is wrong with it."""
    path = getattr(config, field) if path is None else path
    if not image_source_exists(path):
        raise FlagError(field, f"{path}: no such file")
    try:
        return read_image(path)
    except ImageError as e:
        raise FlagError(field, str(e)) from e
