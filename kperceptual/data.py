"""tf.data input pipelines for training (TensorFlow-only).

A training source is one of:

* a folder of images, searched recursively for jpg/jpeg/png/bmp/webp;
* ``tfds:NAME`` or ``tfds:NAME:SPLIT`` for a tensorflow-datasets dataset (``tfds:coco/2017``),
  downloaded and prepared by tensorflow-datasets on first use;
* ``skimage``: the colour photos bundled with scikit-image (the embedded default).

Every image is decoded by ``kperceptual.images`` (EXIF orientation, colour modes), resized so its
shorter side is ``image_size`` and centre-cropped to a square. Files that fail to decode are
skipped, logged once each and counted in ``TrainingImages.skipped``; they never stop a run.

The order of images is a pure function of ``seed`` and the position in the stream, so a run
resumed at step ``s`` sees the same images it would have seen without the interruption.
"""

from __future__ import annotations

import os
import threading

import numpy as np
import tensorflow as tf
from absl import logging

from kperceptual import degradation, images
from kperceptual.config import SKIMAGE_SOURCE, TFDS_PREFIX


def _is_ok(image, ok):
    return ok


def _example_only(example, ok):
    return example


class DataError(ValueError):
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
            import tensorflow_datasets as tfds

            name, split = parse_tfds_name(source)
            try:
                self._builder = tfds.builder(name, data_dir=tfds_data_dir)
            except Exception as e:  # tfds raises several types for unknown names
                raise DataError(f"{source}: not a tensorflow-datasets dataset "
                                f"({str(e).splitlines()[0]})") from e
            self._split = split
            self._image_key = _tfds_image_key(self._builder.info)
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

    def _output_shapes(self) -> tuple[tuple[int, int, int], ...]:
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
            return (*(np.zeros(shape, np.uint8) for shape in self._output_shapes()), False)

    def _load_file(self, path, key, seed) -> tuple:
        name = path.decode() if isinstance(path, bytes) else str(path)
        return self._attempt(name, lambda: images.read_image(name), key, seed)

    def _load_bytes(self, data, index, key, seed) -> tuple:
        name = f"{self.source} example {int(index)}"
        return self._attempt(name, lambda: images.decode_image(bytes(data), name), key, seed)

    def _decode(self, fn, *args):
        shapes = self._output_shapes()
        outputs = tf.numpy_function(fn, list(args), (tf.uint8,) * len(shapes) + (tf.bool,),
                                    stateful=False)
        for output, shape in zip(outputs, shapes):
            output.set_shape(shape)
        outputs[-1].set_shape(())
        arrays = tuple(outputs[:-1])
        return (arrays[0] if len(arrays) == 1 else arrays), outputs[-1]

    # -- streams -----------------------------------------------------------------------------
    def _file_stream(self, seed: int, start: int):
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

    def _examples(self, seed: int, start: int) -> tf.data.Dataset:
        """Unbatched (example, ok) pairs, in a deterministic order from ``start``."""
        if self.kind in ("folder", "skimage"):
            ds = tf.data.Dataset.from_generator(
                lambda: self._file_stream(seed, start),
                output_signature=(tf.TensorSpec((), tf.string), tf.TensorSpec((), tf.int64)))
            return ds.map(lambda p, k: self._decode(self._load_file, p, k, seed),
                          num_parallel_calls=tf.data.AUTOTUNE, deterministic=True)
        return self._tfds_examples(seed, start)

    def _tfds_examples(self, seed: int, start: int) -> tf.data.Dataset:
        import tensorflow_datasets as tfds

        self._builder.download_and_prepare()
        ds = self._builder.as_dataset(
            split=self._split, shuffle_files=False,
            decoders={self._image_key: tfds.decode.SkipDecoding()})
        ds = ds.map(lambda ex: ex[self._image_key])
        ds = ds.enumerate().shuffle(4096, seed=seed, reshuffle_each_iteration=True).repeat()
        ds = ds.skip(start).enumerate(start)  # cheap: images are still encoded here
        return ds.map(lambda k, ex: self._decode(self._load_bytes, ex[1], ex[0], k, seed),
                      num_parallel_calls=tf.data.AUTOTUNE, deterministic=True)

    def dataset(self, batch_size: int, seed: int = 0, start_step: int = 0) -> tf.data.Dataset:
        """An endless dataset of uint8 batches, prefetched: (batch_size, size, size, 3) images,
        or (low-res, high-res) batch pairs for ``SuperResolutionPairs``.

        ``batch_size`` is the global batch (all replicas together); ``start_step`` skips the
        batches a resumed run has already trained on.
        """
        ds = self._examples(seed, start_step * batch_size)
        ds = ds.filter(_is_ok).map(_example_only)
        ds = ds.batch(batch_size, drop_remainder=True)
        return ds.prefetch(tf.data.AUTOTUNE)

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
    and its degradation by ``kperceptual.degradation`` (Gaussian blur ``blur_sigma``, bicubic
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

    def _output_shapes(self):
        low = self.image_size // self.scale
        return (low, low, 3), (self.image_size, self.image_size, 3)

    def _prepare(self, image, key, seed):
        rng = np.random.default_rng([seed, key])
        return degradation.training_pair(image, self.image_size, self.scale, rng,
                                         self.blur_sigma)

    def describe(self) -> str:
        return (f"{self.image_size}px patches (x{self.scale}, blur sigma {self.blur_sigma}) "
                f"from {super().describe()}")
