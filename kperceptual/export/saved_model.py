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
"""

from __future__ import annotations

import os
import re
import shutil
import tempfile

import keras
import tensorflow as tf

from kperceptual.files import write_atomically
from kperceptual.models import NETWORK_ASSET

MODELS_CONFIG = "models.config"


def versions(model_dir: str) -> list[int]:
    """Existing integer versions under ``EXPORT_DIR/<name>``."""
    if not os.path.isdir(model_dir):
        return []
    return sorted(int(d) for d in os.listdir(model_dir)
                  if d.isdigit() and os.path.isdir(os.path.join(model_dir, d)))


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


def _to_uint8(pixels):
    return tf.cast(tf.clip_by_value(tf.round(pixels), 0.0, 255.0), tf.uint8)


def export_saved_model(network: keras.Model, export_dir: str, name: str,
                       version: int | None = None) -> str:
    """Exports ``network`` to ``export_dir/name/version``; returns that path."""
    model_dir = os.path.join(export_dir, name)
    existing = versions(model_dir)
    if version is None:
        version = (existing[-1] + 1) if existing else 1
    target = os.path.join(model_dir, str(version))
    if os.path.exists(target):
        raise FileExistsError(f"{target}: already exists; choose another version")
    os.makedirs(model_dir, exist_ok=True)

    archive = keras.export.ExportArchive()
    archive.track(network)
    num_styles = int(getattr(network, "num_styles", 1) or 1)
    style_spec = [tf.TensorSpec((None, num_styles), tf.float32, name="style_weights")] \
        if num_styles > 1 else []

    def run(pixels, *style_weights):
        inputs = [pixels, *style_weights] if style_weights else pixels
        return network(inputs, training=False)

    def stylise(images, *style_weights):
        return {"outputs": _to_uint8(run(tf.cast(images, tf.float32), *style_weights))}

    def stylise_one_encoded(data, *style_weights):
        image = tf.io.decode_image(data, channels=3, expand_animations=False)
        pixels = run(tf.cast(image, tf.float32)[None], *(w[None] for w in style_weights))
        return tf.io.encode_png(_to_uint8(pixels)[0])

    def stylise_encoded(image_bytes, *style_weights):
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
        os.replace(tmp, target)
    finally:
        if os.path.exists(tmp):
            shutil.rmtree(tmp)
    return target


def latest_version_path(export_dir: str, name: str) -> str | None:
    """``export_dir/name/<highest version>`` or None."""
    found = versions(os.path.join(export_dir, name))
    return os.path.join(export_dir, name, str(found[-1])) if found else None


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

def _config_entries(text: str, path: str) -> list[str]:
    """The ``config { ... }`` blocks of a ``model_config_list`` text proto, verbatim."""
    body = re.fullmatch(r"\s*model_config_list\s*\{(.*)\}\s*", text, re.S)
    if body is None:
        raise ValueError(f"{path}: not a TF Serving model_config_list text proto")
    entries, depth, start = [], 0, None
    for match in re.finditer(r"\bconfig\s*\{|[{}]", body.group(1)):
        token = match.group(0)
        if token != "}":
            if depth == 0:
                start = match.start()
            depth += 1
        else:
            depth -= 1
            if depth < 0:
                raise ValueError(f"{path}: unbalanced braces")
            if depth == 0:
                entries.append(body.group(1)[start:match.end()])
    if depth:
        raise ValueError(f"{path}: unbalanced braces")
    return entries


def _entry_name(entry: str) -> str | None:
    found = re.search(r'\bname\s*:\s*"([^"]*)"', entry)
    return found.group(1) if found else None


def update_models_config(export_dir: str, name: str, base_path: str) -> tuple[str, bool]:
    """Adds ``name`` (``base_path``, platform tensorflow) to ``export_dir/models.config``,
    creating the file if needed; other models' entries are kept as they are and an entry already
    there for ``name`` is left unchanged. Written atomically. Returns (path, whether added)."""
    path = os.path.join(export_dir, MODELS_CONFIG)
    entries = []
    if os.path.exists(path):
        with open(path, encoding="utf-8") as f:
            entries = _config_entries(f.read(), path)
        if any(_entry_name(e) == name for e in entries):
            return path, False
    entries.append(f'config {{\n    name: "{name}"\n    base_path: "{base_path}"\n'
                   f'    model_platform: "tensorflow"\n  }}')
    text = "model_config_list {\n" + "".join(f"  {e}\n" for e in entries) + "}\n"
    write_atomically(path, text.encode("utf-8"), overwrite=True)
    return path, True
