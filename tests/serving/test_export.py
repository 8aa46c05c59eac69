"""``kperceptual.export``: SavedModel signatures and layout, TF Serving's models.config, TFLite run
with LiteRT, and the command line's one-line errors. Tiny networks, real photos."""

import io
import os
import shutil
import stat
import subprocess
import sys
import zipfile

import numpy as np
import pytest
import tensorflow as tf
from PIL import Image

from helpers import REPO, psnr, assert_one_line_errors, with_border_margin
from kperceptual.serving import layout
from kperceptual.serving import tf_saved_model
from kperceptual.serving import tf_tflite
from kperceptual.imaging import files
from kperceptual.imaging import images
from kperceptual.inference import loading as models
from kperceptual.serving.litert import TFLiteModel


@pytest.fixture(scope="module")
def tiny(tmp_path_factory, tiny_style_model):
    """A tiny network, its .keras file and its SavedModel (version 1) in a savedmodels folder."""
    root = tmp_path_factory.mktemp("export")
    keras_path = str(root / "tiny.keras")
    shutil.copy(tiny_style_model, keras_path)
    network = models.load_keras_network(keras_path)
    version = tf_saved_model.export_saved_model(network, str(root / "savedmodels"), "tiny")
    return network, keras_path, version


def stylised(network, image):
    return images.to_uint8(with_border_margin(network, image))


def max_difference(a, b):
    return int(np.abs(a.astype(int) - b.astype(int)).max())


def encode(image, fmt, **options):
    buffer = io.BytesIO()
    Image.fromarray(image).save(buffer, format=fmt, **options)
    return buffer.getvalue()


def test_signatures_match_the_keras_network(tiny, photos):
    network, _, version = tiny
    loaded = tf.saved_model.load(version)
    batch = np.stack([images.resize_and_center_crop(photos[n], 40) for n in ("astronaut", "coffee")])
    expected = np.stack([stylised(network, image) for image in batch])
    for name, dtype in (("serving_default", tf.uint8), ("serving_float", tf.float32)):
        outputs = loaded.signatures[name](images=tf.constant(batch, dtype))["outputs"].numpy()
        assert outputs.dtype == np.uint8 and max_difference(outputs, expected) <= 1, name

    # Encoded images of different sizes and formats in one batch, PNGs out.
    chelsea = images.resize_long_side(photos["chelsea"], 64)       # 43 x 64
    astronaut = images.resize_long_side(photos["astronaut"], 48)   # 48 x 48
    gif = encode(images.resize_long_side(photos["coffee"], 40), "GIF")
    jpeg = encode(chelsea, "JPEG", quality=90)
    inputs = [encode(chelsea, "PNG"), encode(astronaut, "BMP"), gif, jpeg]
    png_bytes = loaded.signatures["serving_bytes"](
        image_bytes=tf.constant(inputs))["png_bytes"].numpy()
    assert len(png_bytes) == 4 and all(data.startswith(b"\x89PNG") for data in png_bytes)
    decoded = [images.decode_image(data) for data in png_bytes]
    for output, source in zip(decoded, (chelsea, astronaut, images.decode_image(gif))):
        assert max_difference(output, stylised(network, source)) <= 1
    assert decoded[3].shape == chelsea.shape  # the JPEG decoders differ by a few levels


def test_saved_model_cli_lists_the_signatures(tiny):
    result = subprocess.run(["saved_model_cli", "show", "--dir", tiny[2], "--all"],
                            capture_output=True, text=True,
                            env=dict(os.environ, TF_CPP_MIN_LOG_LEVEL="3"))
    assert result.returncode == 0, result.stderr[-1000:]
    out = result.stdout
    for signature in ("serving_default", "serving_float", "serving_bytes"):
        assert f"signature_def['{signature}']" in out
    assert "inputs['image_bytes'] tensor_info:\n        dtype: DT_STRING\n        shape: (-1)" in out
    assert "outputs['png_bytes'] tensor_info:\n        dtype: DT_STRING\n        shape: (-1)" in out
    assert "dtype: DT_UINT8\n        shape: (-1, -1, -1, 3)" in out
    assert "dtype: DT_FLOAT\n        shape: (-1, -1, -1, 3)" in out


def test_versions_count_up_and_are_never_replaced(tiny, tmp_path):
    network, _, _ = tiny
    base = str(tmp_path / "savedmodels")
    assert tf_saved_model.export_saved_model(network, base, "m") == os.path.join(base, "m", "1")
    assert tf_saved_model.export_saved_model(network, base, "m") == os.path.join(base, "m", "2")
    saved = os.path.join(base, "m", "2", "saved_model.pb")
    before = os.stat(saved).st_mtime_ns
    with pytest.raises(FileExistsError, match="already exists"):
        tf_saved_model.export_saved_model(network, base, "m", version=2)
    assert os.stat(saved).st_mtime_ns == before
    assert layout.versions(os.path.join(base, "m")) == [1, 2]  # no temporary folder left
    assert not [d for d in os.listdir(os.path.join(base, "m")) if d.startswith(".")]


def modes(folder):
    """{path relative to folder: permission bits} for folder and everything in it."""
    found = {".": stat.S_IMODE(os.stat(folder).st_mode)}
    for root, dirs, names in os.walk(folder):
        for name in dirs + names:
            path = os.path.join(root, name)
            found[os.path.relpath(path, folder)] = stat.S_IMODE(os.stat(path).st_mode)
    return found


def test_exported_version_is_readable_by_other_users(tiny, tmp_path):
    previous = os.umask(0o022)
    try:
        path = tf_saved_model.export_saved_model(tiny[0], str(tmp_path / "savedmodels"), "m")
    finally:
        os.umask(previous)
    found = modes(path)
    assert found["."] == 0o755, oct(found["."])  # not mkdtemp's 0o700
    for name in ("saved_model.pb", "variables/variables.index", models.NETWORK_ASSET):
        assert found[name] == 0o644, (name, oct(found[name]))
    for name in ("assets", "variables"):
        assert found[name] == 0o755, (name, oct(found[name]))
    assert all(mode & 0o044 == 0o044 for mode in found.values()), found


def test_load_saved_model_names_a_foreign_saved_model(tmp_path):
    foreign = tf.Module()
    foreign.double = tf.function(lambda x: {"y": 2.0 * x},
                                 input_signature=[tf.TensorSpec((None,), tf.float32)])
    path = str(tmp_path / "foreign")
    tf.saved_model.save(foreign, path, signatures={"serving_default": foreign.double})
    with pytest.raises(ValueError) as caught:
        tf_saved_model.load_saved_model(path)
    assert str(caught.value) == (f"{path}: no serving_float signature (not a SavedModel "
                                 "exported by kperceptual)")


def test_saved_model_holds_each_weight_once(tiny):
    network, _, version = tiny
    loaded = tf.saved_model.load(version)
    assert len(loaded.variables) == len(network.weights)
    stored = tf.train.load_checkpoint(os.path.join(version, "variables", "variables"))
    values = sum(int(np.prod(shape)) for name, shape in
                 stored.get_variable_to_shape_map().items() if shape)
    assert values == sum(int(np.prod(w.shape)) for w in network.weights)


def test_network_asset_loads_as_the_same_network(tiny, photos):
    network, _, version = tiny
    loaded = models.load_model(version)
    assert loaded.kind == "saved_model" and loaded.network is not None
    image = images.resize_long_side(photos["coffee"], 50)
    assert max_difference(stylised(loaded.network, image), stylised(network, image)) == 0


def test_models_config_is_created_and_updated(tmp_path):
    folder = str(tmp_path)
    path, added = tf_saved_model.update_models_config(folder, "first", "/models/first")
    assert added and path == os.path.join(folder, "models.config")
    tf_saved_model.update_models_config(folder, "second", "/srv/second")
    _, added_again = tf_saved_model.update_models_config(folder, "first", "/models/first")
    assert not added_again
    text = open(path).read()
    assert text.count('name: "first"') == 1 and text.count('name: "second"') == 1
    assert text.index('name: "first"') < text.index('name: "second"')
    assert 'base_path: "/srv/second"' in text and text.count('model_platform: "tensorflow"') == 2

    # Someone else's entry, with nested blocks, is kept as it is.
    other = ('config {\n    name: "other"\n    base_path: "/models/other"\n'
             '    model_version_policy { specific { versions: 3 } }\n  }')
    with open(path, "w") as f:
        f.write(f"model_config_list {{\n  {other}\n}}\n")
    tf_saved_model.update_models_config(folder, "first", "/models/first")
    text = open(path).read()
    assert other in text and 'name: "first"' in text
    assert not [f for f in os.listdir(folder) if ".tmp" in f]


def test_tflite_dynamic_and_fixed_size_run_with_litert(tiny, photos, tmp_path):
    network = tiny[0]
    dynamic = str(tmp_path / "dynamic.tflite")
    fixed = str(tmp_path / "fixed.tflite")
    files.write_atomically(dynamic, tf_tflite.convert_tflite(network, "none"))
    files.write_atomically(fixed, tf_tflite.convert_tflite(network, "none", input_size=32))

    model = TFLiteModel(dynamic, num_threads=1)
    assert model.input_size is None
    for size in (37, 52):  # two sizes: the input tensor is resized in between
        batch = np.stack([images.resize_and_center_crop(photos[n], size).astype(np.float32)
                          for n in ("chelsea", "coffee")])
        outputs = model(batch)
        assert outputs.dtype == np.float32 and outputs.shape == batch.shape
        expected = np.stack([with_border_margin(network, image) for image in batch])
        np.testing.assert_allclose(outputs, expected, atol=0.05)

    model = TFLiteModel(fixed)
    assert model.input_size == (32, 32)
    square = images.resize_and_center_crop(photos["astronaut"], 32)[None].astype(np.float32)
    np.testing.assert_allclose(model(square)[0], with_border_margin(network, square[0]),
                               atol=0.05)
    with pytest.raises(ValueError, match=r"fixed\.tflite: fixed input size 32x32, got 40x40"):
        model(np.zeros((1, 40, 40, 3), np.float32))


def test_litert_runs_on_every_cpu_by_default(tiny, tmp_path):
    """LiteRT given no thread count computes on one thread; TFLiteModel asks for every CPU this
    process may use, and the XNNPACK delegate starts its pool for them."""
    from kperceptual.serving.litert import available_cpus

    path = str(tmp_path / "tiny.tflite")
    files.write_atomically(path, tf_tflite.convert_tflite(tiny[0], "none"))
    threads = lambda: len(os.listdir("/proc/self/task"))  # noqa: E731
    before = threads()
    model = TFLiteModel(path)
    model(np.zeros((1, 16, 16, 3), np.float32))
    assert model.num_threads == available_cpus() == len(os.sched_getaffinity(0))
    if available_cpus() > 1:
        assert threads() > before
    assert TFLiteModel(path, num_threads=1).num_threads == 1


def test_calibration_crops_differ_even_from_one_photo(photos, tmp_path):
    from kperceptual.serving import tf_tflite as tflite

    images.write_image(str(tmp_path / "coffee.png"), photos["coffee"])
    batches = list(tflite.calibration_batches(str(tmp_path), steps=4, image_size=32))
    assert len(batches) == 4
    assert all(b.shape == (1, 32, 32, 3) and b.dtype == np.float32 for b in batches)
    assert len({b.tobytes() for b in batches}) == 4  # a random crop or flip each step
    again = list(tflite.calibration_batches(str(tmp_path), steps=4, image_size=32))
    assert all(np.array_equal(a, b) for a, b in zip(batches, again))  # seeded


def run_export(args, cwd):
    env = dict(os.environ, PYTHONPATH=REPO, TF_CPP_MIN_LOG_LEVEL="3")
    return subprocess.run([sys.executable, "-m", "kperceptual.export", *args], cwd=cwd, env=env,
                          capture_output=True, text=True)


@pytest.mark.slow
def test_cli_saved_model_with_a_dotted_name(tiny, tmp_path):
    previous = os.umask(0o022)  # the subprocess inherits it
    try:
        result = run_export([f"--model={tiny[1]}", "--name=tiny.v2-b_1", "--export_dir=out",
                             "--serving_base_path=/srv/"], tmp_path)
    finally:
        os.umask(previous)
    assert result.returncode == 0, result.stderr[-1500:]
    version = tmp_path / "out" / "tiny.v2-b_1" / "1"
    assert "wrote out/tiny.v2-b_1/1 (" in result.stdout
    assert stat.S_IMODE(os.stat(version).st_mode) == 0o755
    config = (tmp_path / "out" / "models.config").read_text()
    assert 'name: "tiny.v2-b_1"\n    base_path: "/srv/tiny.v2-b_1"' in config


@pytest.mark.slow
def test_cli_writes_int8_tflite_and_refuses_to_overwrite(tiny, tmp_path):
    args = [f"--model={tiny[1]}", "--format=tflite", "--quantize=int8", "--calibration_steps=2",
            "--calibration_size=32", "--export_dir=out"]
    result = run_export(args, tmp_path)
    assert result.returncode == 0, result.stderr[-1500:]
    written = tmp_path / "out" / "tiny_int8.tflite"
    assert "wrote out/tiny_int8.tflite (" in result.stdout and " MB, converted in " in result.stdout
    pixels = np.full((1, 24, 30, 3), 128.0, np.float32)
    assert TFLiteModel(str(written))(pixels).shape == pixels.shape

    again = run_export(args, tmp_path)
    assert again.returncode == 2
    assert again.stderr.strip().splitlines()[-1] == (
        "kperceptual.export: out/tiny_int8.tflite: already exists (pass --overwrite to replace it)")


@pytest.mark.slow
@pytest.mark.parametrize("model", ["starry_night", "zoo_like"])
def test_cli_writes_onnx_that_onnxruntime_runs_at_any_size(model, tmp_path, photos):
    import keras
    import onnxruntime

    from kperceptual import networks

    if model == "zoo_like":  # a small multi-style network: the style weights are an input
        net = networks.StyleTransferNetwork(filters=(8, 8, 8), num_residual_blocks=1,
                                            num_styles=2, style_names=["a", "b"])
        spec = str(tmp_path / "zoo_like.keras")
        net.save(spec)
    else:
        spec, net = model, models.load_model(model).network
    result = run_export([f"--model={spec}", "--format=onnx", "--export_dir=out"], tmp_path)
    assert result.returncode == 0, result.stderr[-1500:]
    path = tmp_path / "out" / f"{model}.onnx"
    assert f"wrote out/{model}.onnx (" in result.stdout
    session = onnxruntime.InferenceSession(str(path))
    names = [i.name for i in session.get_inputs()]
    for height, width in ((64, 96), (120, 80)):
        x = images.resize(photos["astronaut"], height, width)[None].astype(np.float32)
        feed = {names[0]: x}
        inputs = x
        if len(names) > 1:
            weights = np.array([[0.25, 0.75]], np.float32)
            feed[names[1]] = weights
            inputs = [x, weights]
        out = session.run(None, feed)[0]
        reference = keras.ops.convert_to_numpy(net.predict_on_batch(inputs))
        assert out.shape == reference.shape == (1, height, width, 3)
        assert psnr(out, reference) >= 45
    again = run_export([f"--model={spec}", "--format=onnx", "--export_dir=out"], tmp_path)
    assert again.returncode == 2 and "already exists" in again.stderr


# Each bad input and the one line it gets (M: a .keras file, OLD: a SavedModel without its
# network asset).
BAD_INPUTS = [
    (["--model=no_such_model"], "--model: no_such_model: not a .keras or .tflite file"),
    (["--model=M", "--format=tflite", "--quantize=int4"], "--quantize: 'int4' is not one of"),
    (["--model=M", "--format=tflite", "--input_size=4"], "--input_size: must be 0 (any size) or"),
    (["--model=M", "--format=coreml"], "--format: 'coreml' is not one of"),
    (["--model=M", "--max_pixels=0"], "--max_pixels: must be positive, got 0"),
    (["--model=M", "--max_pixels=100", "--max_batch_pixels=50"],
     "--max_batch_pixels: must be 0 or at least --max_pixels (100), got 50"),
    (["--model=M", "--format=tflite", "--quantize=int8", "--calibration_data=nowhere"],
     "--calibration_data: nowhere: no such folder"),
    (["--model=OLD"], "--model: OLD has no Keras network"),
    (["--model=M", "--version=1", "--export_dir=savedmodels"],
     "--version: savedmodels/tiny/1 already exists"),
    (["--model=tiny_none.tflite"], "--model: tiny_none.tflite: a .tflite file cannot be "
     "re-exported; export from the .keras file or a SavedModel"),
    (["--model=not_a_zip.keras"], "--model: not_a_zip.keras: not a Keras archive"),
    (["--model=no_config.keras"], "--model: no_config.keras: cannot load (There is no item "
     "named 'config.json' in the archive)"),
    (["--model=foreign"], "--model: foreign: no serving_float signature (not a SavedModel "
     "exported by kperceptual)"),
    (["--model=M", "--name=../escape"], "--name: '../escape' is not a safe model name"),
    (["--model=M", '--name=a"b'], "--name: 'a\"b' is not a safe model name"),
    (["--model=M", "--name=.hidden"], "--name: '.hidden' is not a safe model name"),
    (["--model=my style.keras"], "--name: the model's own name 'my style' is not a safe model "
     "name (letters, digits, _ . - only, not starting with .); pass --name"),
]


@pytest.mark.slow
def test_cli_bad_input_is_one_line_and_exit_2(tiny, tmp_path):
    """Every case in one process, the first also as the real command
    (helpers.assert_one_line_errors)."""
    shutil.copytree(os.path.dirname(tiny[2]), tmp_path / "savedmodels" / "tiny")
    old = tmp_path / "old"  # a SavedModel exported before the network asset existed
    shutil.copytree(tiny[2], old)
    os.remove(old / "assets" / "network.keras")
    (tmp_path / "tiny_none.tflite").write_bytes(tf_tflite.convert_tflite(tiny[0], "none"))
    (tmp_path / "not_a_zip.keras").write_bytes(b"not a zip archive")
    with zipfile.ZipFile(tmp_path / "no_config.keras", "w") as archive:
        archive.writestr("metadata.json", "{}")
    shutil.copy(tiny[1], tmp_path / "my style.keras")
    foreign = tf.Module()  # a SavedModel from elsewhere, without serving_float
    foreign.f = tf.function(lambda x: {"y": x}, input_signature=[tf.TensorSpec((None,))])
    tf.saved_model.save(foreign, str(tmp_path / "foreign"),
                        signatures={"serving_default": foreign.f})
    assert_one_line_errors("export", [
        ([a.replace("=M", f"={tiny[1]}").replace("=OLD", f"={old}") for a in args],
         message.replace("OLD", str(old))) for args, message in BAD_INPUTS], tmp_path)


@pytest.mark.slow
def test_export_precision_bfloat16_saved_model_matches_float32(tmp_path, photos):
    """--precision=bfloat16 exports the network computing in bfloat16: same signatures and
    pixels in, within 40 dB of the float32 network on a real photo; other formats refuse it."""
    done = run_export(["--model=starry_night", "--precision=bfloat16",
                       f"--export_dir={tmp_path}"], tmp_path)
    assert done.returncode == 0, done.stderr[-2000:]
    assert "precision: bfloat16" in done.stdout
    x = photos["chelsea"][:192, :256].astype(np.float32)[None]
    half = tf_saved_model.load_saved_model(layout.latest_version_path(str(tmp_path),
                                                                      "starry_night"))(x)
    full = with_border_margin(models.load_model("starry_night").network, x[0])[None]
    assert psnr(np.asarray(half, np.float64), np.clip(np.round(full), 0, 255)) >= 40
    refused = run_export(["--model=starry_night", "--precision=bfloat16", "--format=tflite",
                          f"--export_dir={tmp_path}"], tmp_path)
    assert refused.returncode == 2
    assert refused.stderr.strip().splitlines()[-1] == (
        "kperceptual.export: --precision: bfloat16 is for --format=saved_model (for TFLite "
        "use --quantize=float16)")
