"""SavedModels in TF Serving's layout, and TF Serving's ``models.config`` (TensorFlow-only).

``export_saved_model`` writes ``EXPORT_DIR/<name>/<version>/``. The version is written to a
temporary folder and renamed into place, so a server polling the folder never sees half a model;
versions count up from 1 and nothing existing is replaced. The version folder and its files get
the modes the process umask allows (``0o777 & ~umask`` for folders), not the owner-only mode of a
fresh temporary folder, so a server running as another user can read them. The Keras network
is saved beside the graph in ``assets/network.keras`` (``kperceptual.models`` loads it for
tiling and TFLite).

Signatures (any batch, height and width):

* ``serving_default``: ``images`` uint8 (B, H, W, 3) -> ``outputs`` uint8 (B, H, W, 3)
* ``serving_float``:   ``images`` float32 in [0, 255]  -> ``outputs`` uint8
* ``serving_bytes``:   ``image_bytes`` string (B,), each an encoded JPEG, PNG, BMP or GIF (first
  frame) of its own size -> ``png_bytes`` string (B,), PNG-encoded outputs. The ``_bytes``
  suffixes make TF Serving's REST API take and give ``{"b64": ...}`` values.

A multi-style network's (``num_styles`` N > 1) signatures take the style as a second input:
``style_weights`` float32 (B, N) in each of the three above (one-hot for one style, a convex mix
to interpolate), and ``serving_style_index`` takes ``images`` uint8 and ``style`` int32 (B,), an
index into the network's styles (``assets/network.keras`` records their names).

Limits fixed at export (``max_pixels`` per image, ``max_batch_pixels`` per request) bound what one
request can cost: ``serving_bytes`` reads each image's size from its header (JPEG, PNG, GIF, BMP)
before anything is decoded, and a request over a limit fails with an ``InvalidArgumentError``
saying which image and which limit, instead of taking the server's memory (a 4 KB PNG can declare
6000 x 6000 pixels). The pixel signatures bound batch x height x width the same way.

Style networks run on their input reflection-padded by ``networks.border_margin`` pixels on every
side, the output cropped back (``apply_with_margin``), as ``inference.Stylizer`` runs them.
"""

from __future__ import annotations

import os
import shutil
import tempfile

import keras
import tensorflow as tf

from kperceptual import networks
from kperceptual.imaging.files import write_atomically
from kperceptual.serving.layout import (DEFAULT_MAX_PIXELS, NETWORK_ASSET,  # noqa: F401
                                       latest_version_path, versions)

MODELS_CONFIG = "models.config"
BATCH_IMAGES = 4  # the default max_batch_pixels is this many images at max_pixels


def _big_endian(data, start: int, length: int):
    raw = tf.cast(tf.io.decode_raw(tf.strings.substr(data, start, length), tf.uint8), tf.int64)
    return tf.reduce_sum(raw * tf.bitwise.left_shift(
        tf.constant(1, tf.int64), tf.range(8 * (length - 1), -1, -8, dtype=tf.int64)))


def _little_endian(data, start: int, length: int):
    raw = tf.cast(tf.io.decode_raw(tf.strings.substr(data, start, length), tf.uint8), tf.int64)
    return tf.reduce_sum(raw * tf.bitwise.left_shift(
        tf.constant(1, tf.int64), tf.range(0, 8 * length, 8, dtype=tf.int64)))


def declared_pixels(data):
    """The pixel count an encoded JPEG, PNG, GIF or BMP declares in its header (read without
    decoding anything); -1 for bytes of another kind or too short for their header."""
    length = tf.strings.length(data)
    head = tf.strings.substr(data, 0, 8)
    is_png = tf.logical_and(tf.equal(head, b"\x89PNG\r\n\x1a\n"), length >= 24)
    is_jpeg = tf.equal(tf.strings.substr(data, 0, 3), b"\xff\xd8\xff")
    is_gif = tf.logical_and(tf.equal(tf.strings.substr(data, 0, 3), b"GIF"), length >= 10)
    is_bmp = tf.logical_and(tf.equal(tf.strings.substr(data, 0, 2), b"BM"), length >= 26)

    def png():
        return _big_endian(data, 16, 4) * _big_endian(data, 20, 4)

    def jpeg():  # reads markers up to the frame header only
        return tf.reduce_prod(tf.cast(tf.io.extract_jpeg_shape(data)[:2], tf.int64))

    def gif():  # the logical screen, which every frame is decoded into
        return _little_endian(data, 6, 2) * _little_endian(data, 8, 2)

    def bmp():  # a top-down BMP has a negative height
        height = _little_endian(data, 22, 4)
        height = tf.where(height >= 2 ** 31, 2 ** 32 - height, height)
        return _little_endian(data, 18, 4) * height

    return tf.case([(is_png, png), (is_jpeg, jpeg), (is_gif, gif), (is_bmp, bmp)],
                   default=lambda: tf.constant(-1, tf.int64), exclusive=False)


def _current_umask() -> int:
    mask = os.umask(0o077)  # reading the umask means setting it; restored at once
    os.umask(mask)
    return mask


def _open_up(folder: str) -> None:
    """Gives ``folder`` and everything in it the modes a plain ``mkdir`` / ``open`` would under
    the process umask (``tempfile.mkdtemp`` makes the folder owner-only)."""
    mask = _current_umask()
    os.chmod(folder, 0o777 & ~mask)
    for root, dirs, files in os.walk(folder):
        for d in dirs:
            os.chmod(os.path.join(root, d), 0o777 & ~mask)
        for f in files:
            os.chmod(os.path.join(root, f), 0o666 & ~mask)


def apply_with_margin(fn, pixels, margin: int):
    """``fn(pixels)`` on ``pixels`` (B, H, W, C) reflection-padded by ``margin`` on every side (at
    most a side less one), its output cropped back: how exported style networks apply
    ``networks.border_margin`` (as ``inference.Stylizer`` does in Python)."""
    if not margin:
        return fn(pixels)
    shape = tf.shape(pixels)
    top, left = tf.minimum(margin, shape[1] - 1), tf.minimum(margin, shape[2] - 1)
    padded = tf.pad(pixels, [[0, 0], [top, top], [left, left], [0, 0]], mode="REFLECT")
    # Padding by run-time amounts leaves every dimension unknown; TFLite needs the channels.
    padded = tf.reshape(padded, [shape[0], shape[1] + 2 * top, shape[2] + 2 * left,
                                 pixels.shape[-1]])
    return fn(padded)[:, top:top + shape[1], left:left + shape[2], :]


def _to_uint8(pixels):
    return tf.cast(tf.clip_by_value(tf.round(pixels), 0.0, 255.0), tf.uint8)


def _track_each_weight_once(archive) -> None:
    """Keras's archive tracks the Keras variables, and when written the TensorFlow variables
    under them that its endpoints use: two objects a weight, each saved, so the variables file
    held every weight twice. The archive's lists are pointed at the TensorFlow variables, saved
    once (``loaded.variables`` still lists every weight)."""
    tracked = archive._tf_trackable
    for name in ("variables", "trainable_variables", "non_trainable_variables"):
        variables = [v.value if isinstance(v, keras.Variable) else v
                     for v in getattr(tracked, name)]
        if not all(isinstance(v, tf.Variable) for v in variables):
            raise TypeError(f"export: a tracked weight is not a tf.Variable: {variables}")
        setattr(tracked, name, variables)


def export_saved_model(network: keras.Model, export_dir: str, name: str,
                       version: int | None = None, max_pixels: int = DEFAULT_MAX_PIXELS,
                       max_batch_pixels: int | None = None) -> str:
    """Exports ``network`` to ``export_dir/name/version``; returns that path. Requests over
    ``max_pixels`` an image or ``max_batch_pixels`` in all (default: ``BATCH_IMAGES`` images at
    ``max_pixels``) are refused (see the module's doc)."""
    model_dir = os.path.join(export_dir, name)
    existing = versions(model_dir)
    if version is None:
        version = (existing[-1] + 1) if existing else 1
    target = os.path.join(model_dir, str(version))
    if os.path.exists(target):
        raise FileExistsError(f"{target}: already exists; choose another version")
    os.makedirs(model_dir, exist_ok=True)

    max_pixels = int(max_pixels)
    max_batch_pixels = int(max_batch_pixels or BATCH_IMAGES * max_pixels)
    if max_pixels <= 0 or max_batch_pixels < max_pixels:
        raise ValueError(f"max_pixels {max_pixels} must be positive and max_batch_pixels "
                         f"{max_batch_pixels} at least as large")
    archive = keras.export.ExportArchive()
    archive.track(network)
    _track_each_weight_once(archive)
    num_styles = int(getattr(network, "num_styles", 1) or 1)
    style_spec = [tf.TensorSpec((None, num_styles), tf.float32, name="style_weights")] \
        if num_styles > 1 else []
    limits = (f"(this model's limits, set at export: {max_pixels} pixels an image, "
              f"{max_batch_pixels} a request)")

    margin = networks.border_margin(network)

    def run(pixels, *style_weights):
        return apply_with_margin(lambda padded: network(
            [padded, *style_weights] if style_weights else padded, training=False),
            pixels, margin)

    def check_pixels(images):
        shape = tf.cast(tf.shape(images), tf.int64)
        total = shape[0] * shape[1] * shape[2]
        return tf.debugging.Assert(total <= max_batch_pixels, [tf.strings.format(
            "images: {} x {} x {} = {} pixels, over the request limit " + limits,
            (shape[0], shape[1], shape[2], total))])

    def stylise(images, *style_weights):
        with tf.control_dependencies([check_pixels(images)]):
            pixels = run(tf.cast(images, tf.float32), *style_weights)
        return {"outputs": _to_uint8(pixels)}

    def stylise_one_encoded(data, *style_weights):
        image = tf.io.decode_image(data, channels=3, expand_animations=False)
        pixels = run(tf.cast(image, tf.float32)[None], *(w[None] for w in style_weights))
        return tf.io.encode_png(_to_uint8(pixels)[0])

    def stylise_encoded(image_bytes, *style_weights):
        sizes = tf.map_fn(declared_pixels, image_bytes, fn_output_signature=tf.int64)
        index = tf.cast(tf.argmax(tf.concat([sizes, [0]], 0)), tf.int64)
        unknown = tf.cast(tf.argmin(tf.concat([sizes, [0]], 0)), tf.int64)
        checks = [
            tf.debugging.Assert(tf.reduce_all(sizes >= 0), [tf.strings.format(
                "image_bytes[{}]: not a JPEG, PNG, GIF or BMP image (or cut short)",
                unknown)]),
            tf.debugging.Assert(tf.reduce_all(sizes <= max_pixels), [tf.strings.format(
                "image_bytes[{}]: declares {} pixels, over the image limit " + limits,
                (index, tf.reduce_max(tf.concat([sizes, [0]], 0))))]),
            tf.debugging.Assert(tf.reduce_sum(sizes) <= max_batch_pixels, [tf.strings.format(
                "image_bytes: {} images declare {} pixels in all, over the request limit "
                + limits, (tf.size(sizes), tf.reduce_sum(sizes)))]),
        ]
        with tf.control_dependencies(checks):
            image_bytes = tf.identity(image_bytes)
        if style_weights:
            encoded = tf.map_fn(lambda pair: stylise_one_encoded(*pair),
                                (image_bytes, style_weights[0]), fn_output_signature=tf.string)
        else:
            encoded = tf.map_fn(stylise_one_encoded, image_bytes, fn_output_signature=tf.string)
        return {"png_bytes": encoded}

    for endpoint, dtype in (("serving_default", tf.uint8), ("serving_float", tf.float32)):
        archive.add_endpoint(endpoint, stylise, input_signature=[
            tf.TensorSpec((None, None, None, 3), dtype, name="images"), *style_spec])
    archive.add_endpoint("serving_bytes", stylise_encoded, input_signature=[
        tf.TensorSpec((None,), tf.string, name="image_bytes"), *style_spec])
    if num_styles > 1:
        archive.add_endpoint(
            "serving_style_index",
            lambda images, style: stylise(images, tf.one_hot(style, num_styles)),
            input_signature=[tf.TensorSpec((None, None, None, 3), tf.uint8, name="images"),
                             tf.TensorSpec((None,), tf.int32, name="style")])
    tmp = tempfile.mkdtemp(prefix=f".{version}.tmp-", dir=model_dir)
    try:
        archive.write_out(tmp, verbose=False)
        os.makedirs(os.path.join(tmp, os.path.dirname(NETWORK_ASSET)), exist_ok=True)
        network.save(os.path.join(tmp, NETWORK_ASSET))
        _open_up(tmp)
        try:
            os.rename(tmp, target)  # fails if another export made this version meanwhile
        except OSError as e:
            if os.path.exists(target):
                raise FileExistsError(f"{target}: another export wrote this version meanwhile; "
                                      "run again for the next one") from e
            raise
    finally:
        if os.path.exists(tmp):
            shutil.rmtree(tmp)
    return target


def load_saved_model(path: str):
    """A callable: float32 pixels (B, H, W, 3) in [0, 255] (and, for a multi-style network,
    ``style_weights`` (B, N)) -> uint8 outputs, from a SavedModel written by
    ``export_saved_model``; ValueError naming ``path`` for any other SavedModel."""
    signature = tf.saved_model.load(path).signatures.get("serving_float")
    if signature is None:
        raise ValueError(f"{path}: no serving_float signature (not a SavedModel exported by "
                         "kperceptual)")
    takes_style = "style_weights" in signature.structured_input_signature[1]

    def run(pixels, style_weights=None):
        inputs = {"images": tf.constant(pixels, tf.float32)}
        if takes_style:
            if style_weights is None:
                raise ValueError(f"{path}: a multi-style model; give style weights")
            inputs["style_weights"] = tf.constant(style_weights, tf.float32)
        return signature(**inputs)["outputs"].numpy()

    return run


# -- TF Serving's model_config_list ----------------------------------------------------------
# Read and written as what it is, a ModelServerConfig text proto (tensorflow-serving-api ships
# the message): whatever TF Serving accepts is read, names and paths are escaped by protobuf.


def _parse_models_config(text: str, path: str):
    from google.protobuf import text_format
    from tensorflow_serving.config import model_server_config_pb2

    config = model_server_config_pb2.ModelServerConfig()
    try:
        text_format.Parse(text, config)
    except text_format.ParseError as e:
        raise ValueError(f"{path}: not a TF Serving model config ({e})") from None
    if config.WhichOneof("config") == "custom_model_config":
        raise ValueError(f"{path}: holds a custom_model_config; add {MODELS_CONFIG} entries to "
                         "it yourself")
    return config


def _closing_brace(text: str) -> tuple[int, int] | None:
    """(line, column) of the last ``}`` token of a text proto (comments and strings skipped by
    protobuf's own tokenizer): the end of ``model_config_list``."""
    from google.protobuf import text_format

    tokenizer = text_format.Tokenizer(text.split("\n"))
    last = None
    while not tokenizer.AtEnd():
        if tokenizer.token == "}":
            last = (tokenizer._line, tokenizer._column)
        tokenizer.NextToken()
    return last


def update_models_config(export_dir: str, name: str, base_path: str) -> tuple[str, bool]:
    """Adds ``name`` (``base_path``, platform tensorflow) to ``export_dir/models.config``,
    creating the file if needed; other models' entries, and comments, are kept as they are, and
    an entry already there for ``name`` is left unchanged. Raises ``ValueError`` (one line
    naming the file) for a file TF Serving would not read. Written atomically. Returns (path,
    whether added)."""
    from google.protobuf import text_format
    from tensorflow_serving.config import model_server_config_pb2

    path = os.path.join(export_dir, MODELS_CONFIG)
    text = ""
    if os.path.exists(path):
        try:
            with open(path, encoding="utf-8") as f:
                text = f.read()
        except (OSError, UnicodeDecodeError) as e:
            raise ValueError(f"{path}: unreadable ({e})") from None
    config = _parse_models_config(text, path)
    if any(entry.name == name for entry in config.model_config_list.config):
        return path, False
    entry = model_server_config_pb2.ModelConfig(name=name, base_path=base_path,
                                                model_platform="tensorflow")
    expected = model_server_config_pb2.ModelServerConfig()
    expected.CopyFrom(config)
    expected.model_config_list.config.append(entry)
    block = "  config {\n" + text_format.MessageToString(entry, indent=4) + "  }\n"
    brace = _closing_brace(text) if config.HasField("model_config_list") else None
    new_text = None
    if brace is not None:  # inserted before model_config_list's closing brace, all else kept
        lines = text.split("\n")
        line, column = brace
        before = "\n".join(lines[:line] + [lines[line][:column]])
        after = "\n".join([lines[line][column:]] + lines[line + 1:])
        new_text = before.rstrip(" ") + ("" if before.endswith("\n") or not before.strip()
                                         else "\n") + block + after
        if _parse_models_config(new_text, path) != expected:
            new_text = None
    if new_text is None:  # a new file, or one holding only comments
        body = text_format.MessageToString(expected)
        new_text = (text if text.strip() and not config.HasField("model_config_list") else "") \
            + body
    write_atomically(path, new_text.encode("utf-8"), overwrite=True)
    return path, True
