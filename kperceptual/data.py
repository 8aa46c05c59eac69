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

from kperceptual import images
from kperceptual.config import SKIMAGE_SOURCE, TFDS_PREFIX


def _is_ok(image, ok):
    return ok


def _image_only(image, ok):
    return image


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
    if "image" in features and isinstance(features["image"], tfds.features.Image):
        return "image"
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

    def _prepare(self, image: np.ndarray) -> np.ndarray:
        return images.resize_and_center_crop(image, self.image_size)

    def _attempt(self, name: str, read) -> tuple[np.ndarray, bool]:
        """(prepared image, True), or (a blank, False) after logging why ``read`` failed."""
        try:
            return self._prepare(read()), True
        except images.ImageError as e:
            self._skip(name, e)
            return np.zeros((self.image_size, self.image_size, 3), np.uint8), False

    def _load_file(self, path) -> tuple[np.ndarray, bool]:
        name = path.decode() if isinstance(path, bytes) else str(path)
        return self._attempt(name, lambda: images.read_image(name))

    def _load_bytes(self, data, index) -> tuple[np.ndarray, bool]:
        name = f"{self.source} example {int(index)}"
        return self._attempt(name, lambda: images.decode_image(bytes(data), name))

    def _decode(self, fn, *args):
        image, ok = tf.numpy_function(fn, list(args), (tf.uint8, tf.bool), stateful=False)
        image.set_shape((self.image_size, self.image_size, 3))
        ok.set_shape(())
        return image, ok

    # -- streams -----------------------------------------------------------------------------
    def _file_stream(self, seed: int, start: int):
        """File names, an independent shuffle per epoch, starting at position ``start``."""
        n = len(self.files)
        epoch, offset = divmod(start, n)
        while True:
            order = np.random.default_rng([seed, epoch]).permutation(n)
            for i in order[offset:]:
                yield self.files[i]
            offset = 0
            epoch += 1

    def _examples(self, seed: int, start: int) -> tf.data.Dataset:
        """Unbatched (image, ok) pairs, in a deterministic order from ``start``."""
        if self.kind == "folder":
            ds = tf.data.Dataset.from_generator(
                lambda: self._file_stream(seed, start),
                output_signature=tf.TensorSpec((), tf.string))
            return ds.map(lambda p: self._decode(self._load_file, p),
                          num_parallel_calls=tf.data.AUTOTUNE, deterministic=True)
        if self.kind == "skimage":
            photos = np.stack([self._prepare(images.skimage_photo(n))
                               for n in images.SKIMAGE_TRAINING_PHOTOS])
            ds = tf.data.Dataset.from_tensor_slices(photos)
            ds = ds.shuffle(len(photos), seed=seed, reshuffle_each_iteration=True).repeat()
            return ds.skip(start).map(lambda x: (x, tf.constant(True)))
        return self._tfds_examples(seed, start)

    def _tfds_examples(self, seed: int, start: int) -> tf.data.Dataset:
        import tensorflow_datasets as tfds

        self._builder.download_and_prepare()
        ds = self._builder.as_dataset(
            split=self._split, shuffle_files=False,
            decoders={self._image_key: tfds.decode.SkipDecoding()})
        ds = ds.map(lambda ex: ex[self._image_key])
        ds = ds.enumerate().shuffle(4096, seed=seed, reshuffle_each_iteration=True).repeat()
        ds = ds.skip(start)  # cheap: images are still encoded here
        return ds.map(lambda i, data: self._decode(self._load_bytes, data, i),
                      num_parallel_calls=tf.data.AUTOTUNE, deterministic=True)

    def dataset(self, batch_size: int, seed: int = 0, start_step: int = 0) -> tf.data.Dataset:
        """An endless dataset of uint8 batches (batch_size, size, size, 3), prefetched.

        ``batch_size`` is the global batch (all replicas together); ``start_step`` skips the
        batches a resumed run has already trained on.
        """
        ds = self._examples(seed, start_step * batch_size)
        ds = ds.filter(_is_ok).map(_image_only)
        ds = ds.batch(batch_size, drop_remainder=True)
        return ds.prefetch(tf.data.AUTOTUNE)

    def describe(self) -> str:
        if self.kind == "folder":
            return f"{len(self.files)} image files under {self.source}"
        if self.kind == "skimage":
            return f"{len(images.SKIMAGE_TRAINING_PHOTOS)} photos bundled with scikit-image"
        return f"tensorflow-datasets {self.source}"
