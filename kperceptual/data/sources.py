"""Training images and super-resolution pairs, for every Keras backend.

A training source is one of:

* a folder of images, searched recursively for jpg/jpeg/png/bmp/webp;
* ``tfds:NAME`` or ``tfds:NAME:SPLIT`` for a tensorflow-datasets dataset (``tfds:coco/2017``),
  downloaded and prepared by tensorflow-datasets on first use (needs TensorFlow);
* ``skimage``: the colour photos bundled with scikit-image (the embedded default).

Every image is decoded by ``kperceptual.imaging.images`` (EXIF orientation, colour modes), resized so its
shorter side is ``image_size`` and centre-cropped to a square. Files that fail to decode are
skipped, logged once each and counted in ``TrainingImages.skipped``; they never stop a run.

The order of images is a pure function of ``seed`` and the position in the stream, so a run
resumed at step ``s`` sees the same images it would have seen without the interruption.

Two loaders give the same uint8 batches (``kperceptual.data.loaders`` picks one, see ``LOADERS``):

* ``py_dataset``: ``ImageBatches``, a ``keras.utils.PyDataset`` decoding with Python threads;
  this module and it need no TensorFlow, so the JAX and PyTorch backends train without it
  (from folders and ``skimage``).
* ``tf_data``: ``tf_pipeline.dataset(source, ...)``, a tf.data pipeline (``kperceptual.data.tf_pipeline``,
  TensorFlow-only, imported when asked for); the one loader for ``tfds:`` sources, and the one
  that shards each global batch over the input pipelines of a ``tf.distribute`` strategy.
"""

from __future__ import annotations

import concurrent.futures
import itertools
import os
import threading

import keras
import numpy as np
from absl import logging

from kperceptual.data import degradation
from kperceptual.imaging import images
from kperceptual.choices import SKIMAGE_SOURCE, TFDS_PREFIX
from kperceptual.errors import InputError
from kperceptual.tf_fence import tensorflow_available


class DataError(InputError):
    """A training source is missing, empty or unusable."""


def parse_tfds_name(source: str):
    """``tfds:coco/2017[:split]`` -> (name, split)."""
    spec = source[len(TFDS_PREFIX):]
    name, _, split = spec.partition(":")
    return name, split or "train"


def _tfds_image_key(info) -> str:
    import tensorflow_datasets as tfds

    features = info.features
    for key in ("hr", "image"):  # super-resolution sets (div2k) hold "lr" and "hr" images
        if key in features and isinstance(features[key], tfds.features.Image):
            return key
    for key, feature in features.items():
        if isinstance(feature, tfds.features.Image):
            return key
    raise DataError(f"{info.name} has no image feature")


class TrainingImages:
    """Square training images from a folder, a tfds dataset or the bundled photos.

    Args:
        source: folder path, ``tfds:NAME[:SPLIT]`` or ``skimage``.
        image_size: side of the square crops.
        tfds_data_dir: where tensorflow-datasets keeps its data (its default if None).
    """

    def __init__(self, source: str, image_size: int, tfds_data_dir: str | None = None):
        if image_size <= 0:
            raise DataError(f"image size must be positive, got {image_size}")
        self.source = source
        self.image_size = int(image_size)
        self.tfds_data_dir = tfds_data_dir
        self.skipped: dict[str, str] = {}
        self._lock = threading.Lock()
        self.files: list[str] = []
        if source == SKIMAGE_SOURCE:
            self.kind = "skimage"
            self.files = [images.SKIMAGE_PREFIX + n for n in images.SKIMAGE_TRAINING_PHOTOS]
        elif source.startswith(TFDS_PREFIX):
            self.kind = "tfds"
            if not tensorflow_available():
                raise DataError(f"{source}: reading tensorflow-datasets needs TensorFlow, which "
                                "is not installed; train from a folder of images or skimage")
            import tensorflow_datasets as tfds

            name, split = parse_tfds_name(source)
            try:
                self.builder = tfds.builder(name, data_dir=tfds_data_dir)
            except Exception as e:  # tfds raises several types for unknown names
                raise DataError(f"{source}: not a tensorflow-datasets dataset "
                                f"({str(e).splitlines()[0]})") from e
            self.split = split
            self.image_key = _tfds_image_key(self.builder.info)
        else:
            self.kind = "folder"
            if not os.path.isdir(source):
                raise DataError(f"{source}: no such folder (for a tensorflow-datasets name "
                                f"write tfds:NAME, for the bundled photos write skimage)")
            self.files = images.list_images(source)
            if not self.files:
                raise DataError(f"{source}: no images ({', '.join(images.IMAGE_EXTENSIONS)}) "
                                "found in this folder or below it")

    # -- decoding ----------------------------------------------------------------------------
    def _skip(self, name: str, error: Exception) -> None:
        with self._lock:
            first = name not in self.skipped
            self.skipped[name] = str(error)
        if first:
            logging.warning("skipping unreadable training image: %s", error)

    def output_shapes(self) -> tuple[tuple[int, int, int], ...]:
        """The shapes of the uint8 arrays one example gives (subclasses give pairs)."""
        return ((self.image_size, self.image_size, 3),)

    def _prepare(self, image: np.ndarray, key: int, seed: int) -> tuple[np.ndarray, ...]:
        """One example from a decoded image; ``key`` is its position in the stream and ``seed``
        the dataset's, for any randomness (so resumed runs see the same examples)."""
        return (images.resize_and_center_crop(image, self.image_size),)

    def _attempt(self, name: str, read, key, seed) -> tuple:
        """(*prepared arrays, True), or (blanks, False) after logging why ``read`` failed."""
        try:
            return (*self._prepare(read(), int(key), int(seed)), True)
        except images.ImageError as e:
            self._skip(name, e)
            return (*(np.zeros(shape, np.uint8) for shape in self.output_shapes()), False)

    def load_file(self, path, key, seed) -> tuple:
        name = path.decode() if isinstance(path, bytes) else str(path)
        return self._attempt(name, lambda: images.read_image(name), key, seed)

    def load_bytes(self, data, index, key, seed) -> tuple:
        name = f"{self.source} example {int(index)}"
        return self._attempt(name, lambda: images.decode_image(bytes(data), name), key, seed)

    def none_readable(self) -> bool:
        """Whether every file of a folder (or the bundled photos) has failed to decode."""
        with self._lock:
            return bool(self.files) and len(self.skipped) >= len(self.files) and \
                set(self.files) <= self.skipped.keys()

    def check_readable(self) -> None:
        """Raises ``DataError`` when no file of the source can be read."""
        if self.none_readable():
            raise DataError(f"{self.source}: none of its images can be read")

    # -- streams -----------------------------------------------------------------------------
    def file_stream(self, seed: int, start: int):
        """(file name, position) pairs, an independent shuffle per epoch, from ``start``."""
        n = len(self.files)
        epoch, offset = divmod(start, n)
        position = start
        while True:
            order = np.random.default_rng([seed, epoch]).permutation(n)
            for i in order[offset:]:
                yield self.files[i], position
                position += 1
            offset = 0
            epoch += 1

    # -- loaders -----------------------------------------------------------------------------
    def py_dataset(self, batch_size: int, seed: int = 0, start_step: int = 0,
                   num_batches: int | None = None, **kwargs) -> ImageBatches:
        """The same batches as ``tf_pipeline.dataset`` as a ``keras.utils.PyDataset`` (no TensorFlow), for
        folders and ``skimage``; endless when ``num_batches`` is None. ``kwargs`` go to
        ``ImageBatches`` (``threads``, ``workers``, ``max_queue_size``)."""
        if self.kind == "tfds":
            raise DataError(f"{self.source}: the py_dataset loader reads folders and skimage; "
                            "read tensorflow-datasets with the tf_data loader")
        return ImageBatches(self, batch_size, seed, start_step, num_batches, **kwargs)

    def describe(self) -> str:
        if self.kind == "folder":
            return f"{len(self.files)} image files under {self.source}"
        if self.kind == "skimage":
            return f"{len(images.SKIMAGE_TRAINING_PHOTOS)} photos bundled with scikit-image"
        return f"tensorflow-datasets {self.source}"


class SuperResolutionPairs(TrainingImages):
    """(low-res, high-res) training pairs for super-resolution by ``scale``, from the same
    sources as ``TrainingImages``: a random ``patch_size`` x ``patch_size`` high-resolution
    patch of each image (flipped at random; images smaller than a patch are enlarged first),
    and its degradation by ``kperceptual.data.degradation`` (Gaussian blur ``blur_sigma``, bicubic
    downsampling by ``scale``). Batches are (low-res (B, p/s, p/s, 3), high-res (B, p, p, 3)),
    uint8. Crops and flips are a pure function of the seed and the example's position."""

    def __init__(self, source: str, patch_size: int, scale: int, blur_sigma: float = 1.0,
                 tfds_data_dir: str | None = None):
        if scale < 2 or patch_size % scale:
            raise DataError(f"patch size {patch_size} must be a multiple of the scale {scale} "
                            "(>= 2)")
        super().__init__(source, patch_size, tfds_data_dir)
        self.scale = int(scale)
        self.blur_sigma = float(blur_sigma)

    def output_shapes(self):
        low = self.image_size // self.scale
        return (low, low, 3), (self.image_size, self.image_size, 3)

    def _prepare(self, image, key, seed):
        rng = np.random.default_rng([seed, key])
        return degradation.training_pair(image, self.image_size, self.scale, rng,
                                         self.blur_sigma)

    def describe(self) -> str:
        return (f"{self.image_size}px patches (x{self.scale}, blur sigma {self.blur_sigma}) "
                f"from {super().describe()}")


PIXELS_KEY, STYLE_KEY = "pixels", "style"


class MultiStyleImages(TrainingImages):
    """``TrainingImages`` for a multi-style network: each example also gets the index of the
    style it trains, ``styles[position % len(styles)]`` (round robin over the stream, so every
    style gets the same share and a resumed run the same assignment). Batches are dicts
    ``{"pixels": (B, size, size, 3) uint8, "style": (B,) uint8}``."""

    def __init__(self, source: str, image_size: int, styles, tfds_data_dir: str | None = None,
                 names=None):
        self.styles = tuple(int(s) for s in styles)
        if not self.styles or not all(0 <= s <= 255 for s in self.styles):
            raise DataError(f"style indices must be in 0..255, got {self.styles}")
        # What the log names each trained style by (default: its index).
        self.names = tuple(names) if names is not None else tuple(map(str, self.styles))
        if len(self.names) != len(self.styles):
            raise DataError(f"{len(self.names)} style names for {len(self.styles)} styles")
        super().__init__(source, image_size, tfds_data_dir)

    def output_shapes(self):
        return super().output_shapes() + ((),)

    def _prepare(self, image, key, seed):
        return (*super()._prepare(image, key, seed),
                np.uint8(self.styles[int(key) % len(self.styles)]))

    @staticmethod
    def batch_structure(pixels, style):
        return {PIXELS_KEY: pixels, STYLE_KEY: style}

    def describe(self) -> str:
        if len(self.names) == 1:
            return f"{super().describe()}, style {self.names[0]}"
        return f"{super().describe()}, styles {', '.join(self.names)} in turn"


class ImageBatches(keras.utils.PyDataset):
    """The batches of ``TrainingImages.dataset`` (the same uint8 arrays in the same order) as a
    ``keras.utils.PyDataset``, without TensorFlow; build it with ``TrainingImages.py_dataset``.

    Batch k is the next ``batch_size`` readable examples of the source's stream after batch
    k - 1 (batch 0 starts at position ``start_step * batch_size``). A bad file moves every later
    batch boundary, so the position where each computed batch ends is recorded, and asking for a
    batch whose start is not known yet computes the batches before it first (keeping them for
    when they are asked for): any call order gives the same batches, and Keras asks in order.
    One batch's images are decoded in parallel by ``threads`` threads (Pillow releases the GIL;
    by default one per core, at most ``batch_size``); ``workers`` > 1 (the default) makes Keras
    prefetch up to ``max_queue_size`` batches in background threads, as tf.data prefetches. Not
    for ``use_multiprocessing``: the record of batch ends lives in this process.

    ``num_batches`` None makes it endless; ``fit`` then needs ``steps_per_epoch``, and a later
    epoch goes on where the last one stopped (a finite one starts again from batch 0).
    """

    def __init__(self, source: TrainingImages, batch_size: int, seed: int = 0,
                 start_step: int = 0, num_batches: int | None = None,
                 threads: int | None = None, workers: int = 2, max_queue_size: int = 10):
        super().__init__(workers=workers, use_multiprocessing=False,
                         max_queue_size=max_queue_size)
        if batch_size <= 0:
            raise DataError(f"batch size must be positive, got {batch_size}")
        self.source = source
        self.batch_size = int(batch_size)
        self.seed = int(seed)
        self._num_batches = num_batches
        self._starts = [int(start_step) * self.batch_size]  # _starts[k]: where batch k begins
        self._early: dict[int, object] = {}  # batches computed before they were asked for
        self._lock = threading.Lock()
        self._pool = concurrent.futures.ThreadPoolExecutor(
            threads or min(self.batch_size, os.cpu_count() or 1))

    @property
    def num_batches(self) -> int | None:
        return self._num_batches

    def __getitem__(self, index: int):
        if index < 0 or self._num_batches is not None and index >= self._num_batches:
            raise IndexError(f"batch {index} of {self._num_batches}")
        with self._lock:
            if index in self._early:
                return self._early.pop(index)
            for earlier in range(len(self._starts) - 1, index):
                self._early[earlier] = self._read(earlier)
            return self._read(index)

    def _read(self, index: int):
        """Batch ``index`` (its start known), recording where the next one starts."""
        source, examples = self.source, []
        stream = source.file_stream(self.seed, self._starts[index])
        while len(examples) < self.batch_size:
            wanted = list(itertools.islice(stream, self.batch_size - len(examples)))
            decoded = self._pool.map(lambda item: source.load_file(*item, self.seed), wanted)
            examples += [arrays for *arrays, ok in decoded if ok]
            if len(examples) < self.batch_size:
                source.check_readable()
        if index + 1 == len(self._starts):
            self._starts.append(wanted[-1][1] + 1)
        parts = tuple(np.stack(part) for part in zip(*examples))
        if isinstance(source, MultiStyleImages):
            return source.batch_structure(*parts)
        return parts[0] if len(parts) == 1 else parts
