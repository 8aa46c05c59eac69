"""Issue 15, item 1: a SavedModel's signatures refuse images over the pixel limits fixed at
export, reading serving_bytes sizes from the headers before anything is decoded."""

import io
import struct
import zlib

import numpy as np
import pytest
import tensorflow as tf
from PIL import Image

from kperceptual.serving import tf_saved_model
from kperceptual.inference import loading as models


def encode(shape, fmt):
    buffer = io.BytesIO()
    Image.fromarray(np.full(shape, 128, np.uint8)).save(buffer, format=fmt)
    return buffer.getvalue()


def png_declaring(width, height):
    """A real 8x8 PNG whose header claims width x height pixels (checksum fixed): 4 KB that
    would take gigabytes to decode."""
    data = bytearray(encode((8, 8, 3), "PNG"))
    data[16:24] = struct.pack(">II", width, height)
    data[29:33] = struct.pack(">I", zlib.crc32(bytes(data[12:29])))
    return bytes(data)


@pytest.fixture(scope="module")
def served(tmp_path_factory, tiny_style_model):
    network = models.load_keras_network(tiny_style_model)
    path = tf_saved_model.export_saved_model(network, str(tmp_path_factory.mktemp("limits")), "tiny",
                                     max_pixels=40 * 40, max_batch_pixels=3 * 40 * 40)
    return tf.saved_model.load(path).signatures


def _bytes(served, inputs):
    return served["serving_bytes"](image_bytes=tf.constant(inputs))["png_bytes"].numpy()


def test_images_within_the_limits_are_served(served):
    out = _bytes(served, [encode((40, 40, 3), f) for f in ("PNG", "JPEG", "GIF")])
    assert len(out) == 3 and all(o.startswith(b"\x89PNG") for o in out)
    assert served["serving_default"](images=tf.zeros((2, 40, 40, 3), tf.uint8))[
        "outputs"].shape == (2, 40, 40, 3)


@pytest.mark.parametrize("fmt", ["PNG", "JPEG", "GIF", "BMP"])
def test_an_image_over_the_limit_is_refused_from_its_header(served, fmt):
    with pytest.raises(tf.errors.InvalidArgumentError,
                       match=r"image_bytes\[1\]: declares 1681 pixels, over the image limit"):
        _bytes(served, [encode((8, 8, 3), "PNG"), encode((41, 41, 3), fmt)])


def test_a_small_file_declaring_a_huge_image_is_refused_before_decoding(served):
    # Decoded, this would need 36e6 x 3 bytes and the network's activations: the server dies.
    with pytest.raises(tf.errors.InvalidArgumentError, match="declares 36000000 pixels"):
        _bytes(served, [png_declaring(6000, 6000)])
    with pytest.raises(tf.errors.InvalidArgumentError, match="declares 144000000 pixels"):
        _bytes(served, [png_declaring(12000, 12000)])


def test_a_request_over_the_batch_limit_is_refused(served):
    with pytest.raises(tf.errors.InvalidArgumentError, match="4 images declare 6400 pixels in "
                                                             "all, over the request limit"):
        _bytes(served, [encode((40, 40, 3), "PNG")] * 4)
    with pytest.raises(tf.errors.InvalidArgumentError, match="over the request limit"):
        served["serving_default"](images=tf.zeros((4, 40, 40, 3), tf.uint8))


def test_bytes_of_another_kind_are_refused_in_one_line(served):
    with pytest.raises(tf.errors.InvalidArgumentError,
                       match=r"image_bytes\[0\]: not a JPEG, PNG, GIF or BMP"):
        _bytes(served, [b"GIF8"])
