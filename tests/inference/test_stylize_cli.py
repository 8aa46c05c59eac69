"""``python -m kperceptual.stylize``: folders, globs, colour modes, bad files, no overwriting,
bad flags."""

import io
import os
import struct
import subprocess
import sys
import zlib

import numpy as np
import pytest
from PIL import Image

from helpers import REPO, assert_one_line_errors, with_border_margin
from kperceptual.imaging import images


@pytest.fixture(scope="module")
def keras_model(tiny_style_model):
    return tiny_style_model


def run_stylize(args, cwd):
    env = dict(os.environ, PYTHONPATH=REPO, TF_CPP_MIN_LOG_LEVEL="3")
    return subprocess.run([sys.executable, "-m", "kperceptual.stylize", *args], cwd=cwd, env=env,
                          capture_output=True, text=True)


@pytest.mark.slow
def test_folder_with_a_bad_file_goes_on_and_exits_1(tmp_path, photo_folder, keras_model):
    out = tmp_path / "out"
    result = run_stylize([f"--model={keras_model}", f"--output={out}", "--max_size=64",
                          str(photo_folder)], tmp_path)
    assert result.returncode == 1
    assert f"kperceptual.stylize: {photo_folder / 'broken.jpg'}: not a readable image" in \
        result.stderr
    written = sorted(str(p.relative_to(out)) for p in out.rglob("*.png"))
    assert written == ["astronaut_tiny_style.png", "sub/chelsea_tiny_style.png",
                       "sub/coffee_tiny_style.png"]  # sub-folders kept
    chelsea = images.read_image(str(out / "sub" / "chelsea_tiny_style.png"))
    assert chelsea.shape == (43, 64, 3)  # 300 x 451 resized to a long side of 64

    # Running again replaces nothing without --overwrite.
    before = (out / "sub" / "chelsea_tiny_style.png").stat().st_mtime_ns
    again = run_stylize([f"--model={keras_model}", f"--output={out / 'sub'}", "--max_size=64",
                         str(photo_folder / "sub" / "chelsea.png")], tmp_path)
    assert again.returncode == 1 and "already exists" in again.stderr
    assert (out / "sub" / "chelsea_tiny_style.png").stat().st_mtime_ns == before


@pytest.mark.slow
def test_saved_model_graph_and_its_keras_asset_match_the_network(tmp_path, photos,
                                                                 keras_model):
    """By name, the SavedModel's Keras asset runs (its graph is never loaded); a copy without
    the asset runs the served graph; both give the network's output."""
    import shutil

    import keras

    from kperceptual.serving import tf_saved_model
    from kperceptual.inference import stylizer as inference
    from kperceptual.inference import loading as models

    net = keras.saving.load_model(keras_model)
    version = tf_saved_model.export_saved_model(net, str(tmp_path / "savedmodels"), "tiny_style")
    graph_only = tmp_path / "graph_only"
    shutil.copytree(version, graph_only)
    os.remove(graph_only / models.NETWORK_ASSET)
    images.write_image(str(tmp_path / "coffee.png"), images.resize_long_side(photos["coffee"], 60))
    expected = images.to_uint8(with_border_margin(
        net, images.read_image(str(tmp_path / "coffee.png"))))
    for model, out in [("tiny_style", "out"), (str(graph_only), "out_graph")]:
        result = run_stylize([f"--model={model}", "--models_dir=savedmodels", f"--output={out}",
                              "--precision=float32", "coffee.png"], tmp_path)
        assert result.returncode == 0, result.stderr[-1500:]
        name = "tiny_style" if model == "tiny_style" else "graph_only"
        served = images.read_image(str(tmp_path / out / f"coffee_{name}.png"))
        assert np.abs(served.astype(int) - expected.astype(int)).max() <= 1, model

    with_asset = models.load_model("tiny_style", str(tmp_path / "savedmodels"))
    inference.Stylizer(with_asset).image(expected)
    assert with_asset.network is not None and not with_asset.fn.loaded
    without = models.load_model(str(graph_only))
    assert without.network is None and without.fn.loaded


BAD_FLAGS = [(["--strength=1.5", "x.jpg"], "--strength"),
             (["--memory_budget=lots", "x.jpg"], "--memory_budget"),
             (["--tile=-3", "x.jpg"], "--tile"),
             (["--tile=8", "x.jpg"], "--tile: 8 must be larger"),
             (["--batch_size=0", "x.jpg"], "--batch_size"),
             (["--no_such_flag=1", "x.jpg"], "--no_such_flag"),
             ([], "no inputs"),
             (["--model=no_such_model", "x.jpg"], "--model"),
             (["--output=o.png", "x.jpg", "y.jpg"], "--output: o.png names one file, but the "
              "inputs hold 2"),
             (["--output=o.mov", "x.mov"], "--output: o.mov: videos are written as .mp4"),
             (["--output=o.jpg", "--style=all", "x.jpg"], "--output: o.jpg names one file"),
             (["--output=o.mp4", os.path.join(REPO, "docs", "images", "udnie_solo.jpg")],
              "--output: o.mp4: ")]


@pytest.mark.slow
def test_bad_flags_are_one_line_and_exit_2(tmp_path, keras_model):
    """Every case in one process, the first also as the real command
    (helpers.assert_one_line_errors)."""
    assert_one_line_errors("stylize", [
        (([] if any(a.startswith("--model") for a in args) else [f"--model={keras_model}"])
         + args, flag) for args, flag in BAD_FLAGS], tmp_path)


def _bomb_png(path):
    """A real 8x8 PNG whose header claims 20000 x 20000 pixels (checksum fixed)."""
    buffer = io.BytesIO()
    Image.new("RGB", (8, 8)).save(buffer, format="PNG")
    data = bytearray(buffer.getvalue())
    data[16:24] = struct.pack(">II", 20000, 20000)
    data[29:33] = struct.pack(">I", zlib.crc32(bytes(data[12:29])))
    path.write_bytes(bytes(data))


@pytest.mark.slow
def test_bad_files_same_stems_and_collisions(tmp_path, photos, keras_model):
    root = tmp_path / "batch"
    for folder in ("a", "b"):
        (root / folder).mkdir(parents=True)
    images.write_image(str(root / "a" / "x.jpg"), photos["astronaut"])
    images.write_image(str(root / "b" / "x.jpg"), photos["coffee"])
    images.write_image(str(root / "x.jpg"), photos["chelsea"])
    images.write_image(str(root / "x.png"), photos["chelsea"])  # same output as x.jpg
    (root / "empty.jpg").write_bytes(b"")
    jpeg = (root / "a" / "x.jpg").read_bytes()
    (root / "truncated.jpg").write_bytes(jpeg[:len(jpeg) // 2])
    _bomb_png(root / "bomb.png")
    (root / "text.jpg").write_text("not an image at all")
    out = tmp_path / "out"
    result = run_stylize([f"--model={keras_model}", f"--output={out}", "--max_size=48",
                          str(root), str(tmp_path / "nothing" / "*.png")], tmp_path)
    assert result.returncode == 1
    lines = [line for line in result.stderr.splitlines() if line.startswith("kperceptual.")]
    for name, why in [("empty.jpg", "0 bytes"), ("truncated.jpg", "not a readable image"),
                      ("bomb.png", "too many pixels"), ("text.jpg", "not a readable image")]:
        assert sum(f"{root / name}: " in line and why in line for line in lines) == 1, name
    assert any(f"{root / 'x.png'}: its output" in line and "also the output of" in line
               for line in lines)
    assert any("nothing/*.png: no image or video files match" in line for line in lines)
    assert lines[-1] == "kperceptual.stylize: 6 of 9 inputs failed"
    written = sorted(str(p.relative_to(out)) for p in out.rglob("*.png"))
    assert written == ["a/x_tiny_style.png", "b/x_tiny_style.png", "x_tiny_style.png"]
    assert images.read_image(str(out / "x_tiny_style.png")).shape == (32, 48, 3)  # chelsea

    # A glob (quoted, recursive) keeps the sub-folders below its fixed part.
    globbed = run_stylize([f"--model={keras_model}", f"--output={tmp_path / 'globbed'}",
                           "--max_size=32", str(root / "**" / "x.jpg")], tmp_path)
    assert globbed.returncode == 0, globbed.stderr[-800:]
    written = sorted(str(p.relative_to(tmp_path / "globbed"))
                     for p in (tmp_path / "globbed").rglob("*.png"))
    assert written == ["a/x_tiny_style.png", "b/x_tiny_style.png", "x_tiny_style.png"]


def test_colour_modes_exif_and_alpha(tmp_path, photos, keras_model):
    root = tmp_path / "modes"
    root.mkdir()
    rgb = Image.fromarray(photos["chelsea"])  # 300 x 451
    rgb.convert("L").save(root / "grey.png")
    rgb.convert("P").save(root / "palette.png")
    rgb.convert("CMYK").save(root / "cmyk.jpg")
    Image.fromarray(np.asarray(rgb.convert("L"), np.uint16) * 257).save(root / "sixteen.png")
    rgba = rgb.convert("RGBA")
    rgba.putalpha(Image.fromarray(np.tile(np.linspace(0, 255, 451).astype(np.uint8), (300, 1))))
    rgba.save(root / "alpha.png")
    exif = rgb.getexif()
    exif[0x0112] = 6  # shown rotated 90 degrees clockwise
    rgb.save(root / "rotated.jpg", exif=exif.tobytes())
    out = tmp_path / "out"
    result = run_stylize([f"--model={keras_model}", f"--output={out}", "--max_size=64",
                          str(root)], tmp_path)
    assert result.returncode == 0, result.stderr[-800:]
    for name in ("grey", "palette", "cmyk", "sixteen"):
        assert images.read_image(str(out / f"{name}_tiny_style.png")).shape == (43, 64, 3), name
    assert images.read_image(str(out / "rotated_tiny_style.png")).shape == (64, 43, 3)
    with Image.open(out / "alpha_tiny_style.png") as written:
        assert written.mode == "RGBA" and written.size == (64, 43)
        alpha = np.asarray(written)[..., 3]
    assert alpha[:, :4].max() < 30 and alpha[:, -4:].min() > 225


@pytest.mark.slow
def test_output_may_name_the_file_for_one_input(tmp_path, photos, keras_model):
    source = tmp_path / "p.png"
    images.write_image(str(source), images.resize_long_side(photos["coffee"], 40))
    target = tmp_path / "out" / "styled.jpg"
    result = run_stylize([f"--model={keras_model}", f"--output={target}", str(source)], tmp_path)
    assert result.returncode == 0, result.stderr[-2000:]
    with Image.open(target) as written:  # a file, in the format its extension names
        assert (written.format, written.size) == ("JPEG", Image.open(source).size)
    assert not (tmp_path / "stylised").exists()
    before = target.read_bytes()
    again = run_stylize([f"--model={keras_model}", f"--output={target}", str(source)], tmp_path)
    assert again.returncode == 1 and "already exists (pass --overwrite)" in again.stderr
    assert target.read_bytes() == before
    rgba = tmp_path / "rgba.png"  # JPEG holds no alpha: written as RGB, with a warning line
    rgb = images.read_image(str(source))
    images.write_image(str(rgba), np.dstack([rgb, np.full(rgb.shape[:2], 200, np.uint8)]))
    third = run_stylize([f"--model={keras_model}", f"--output={tmp_path / 'rgba.jpg'}",
                         str(rgba)], tmp_path)
    assert third.returncode == 0 and "holds no alpha" in third.stderr, third.stderr[-2000:]
    with Image.open(tmp_path / "rgba.jpg") as written:
        assert written.mode == "RGB"


def test_never_overwrites_an_input(tmp_path, photos, keras_model):
    folder = tmp_path / "in"
    folder.mkdir()
    images.write_image(str(folder / "p.png"), images.resize_long_side(photos["coffee"], 40))
    images.write_image(str(folder / "p_tiny_style.png"), photos["chelsea"])
    before = (folder / "p_tiny_style.png").read_bytes()
    result = run_stylize([f"--model={keras_model}", f"--output={folder}", "--overwrite",
                          str(folder / "p.png"), str(folder / "p_tiny_style.png")], tmp_path)
    assert result.returncode == 1
    assert "is an input; not replaced" in result.stderr
    assert (folder / "p_tiny_style.png").read_bytes() == before
    assert (folder / "p_tiny_style_tiny_style.png").exists()


@pytest.mark.slow
def test_video_keeps_frame_count_size_and_rate(tmp_path, photos, keras_model):
    import imageio.v2 as imageio

    source = tmp_path / "clip.mp4"
    frames = [images.resize(np.roll(photos["astronaut"], 8 * i, axis=1), 48, 64)
              for i in range(8)]
    imageio.mimwrite(str(source), frames, fps=12, macro_block_size=1)
    result = run_stylize([f"--model={keras_model}", "--output=out", "--batch_size=3",
                          str(source)], tmp_path)
    assert result.returncode == 0, result.stderr[-800:]
    reader = imageio.get_reader(str(tmp_path / "out" / "clip_tiny_style.mp4"))
    try:
        assert reader.get_meta_data()["fps"] == 12
        written = [frame for frame in reader]
    finally:
        reader.close()
    assert len(written) == 8 and written[0].shape == (48, 64, 3)


def _write(path, shape, seed=0):
    images.write_image(str(path), np.random.default_rng(seed).integers(0, 256, (*shape, 3),
                                                                       dtype=np.uint8))


def _png_sizes(folder):
    return {str(p.relative_to(folder)): images.read_image(str(p)).shape[:2]
            for p in folder.rglob("*.png")}


def test_images_smaller_than_the_network_needs_keep_their_size(tmp_path, keras_model):
    for shape in [(1, 7), (4, 4), (3, 200)]:
        _write(tmp_path / f"{shape[0]}x{shape[1]}.png", shape)
    result = run_stylize([f"--model={keras_model}", "--output=out", "1x7.png", "4x4.png",
                          "3x200.png"], tmp_path)
    assert result.returncode == 0, result.stderr[-800:]
    assert _png_sizes(tmp_path / "out") == {"1x7_tiny_style.png": (1, 7),
                                            "4x4_tiny_style.png": (4, 4),
                                            "3x200_tiny_style.png": (3, 200)}


@pytest.fixture(scope="module")
def tflite_models(tmp_path_factory, keras_model):
    """The tiny network as a dynamic-size and a fixed-size (32x32) .tflite file."""
    import keras

    from kperceptual.serving import tf_tflite
    from kperceptual.imaging import files

    net = keras.saving.load_model(keras_model)
    folder = tmp_path_factory.mktemp("tflite")
    dynamic, fixed = str(folder / "dynamic.tflite"), str(folder / "fixed.tflite")
    files.write_atomically(dynamic, tf_tflite.convert_tflite(net, "none", 0))
    files.write_atomically(fixed, tf_tflite.convert_tflite(net, "none", 32))
    return net, dynamic, fixed


@pytest.mark.slow
def test_tflite_models_dynamic_and_fixed_size(tmp_path, tflite_models):
    net, dynamic, fixed = tflite_models
    _write(tmp_path / "wide.png", (30, 45))
    _write(tmp_path / "tiny.png", (3, 5), seed=1)
    _write(tmp_path / "square.png", (32, 32), seed=2)
    result = run_stylize([f"--model={dynamic}", "--output=out", "wide.png", "tiny.png"],
                         tmp_path)
    assert result.returncode == 0, result.stderr[-800:]
    assert _png_sizes(tmp_path / "out") == {"wide_dynamic.png": (30, 45),
                                            "tiny_dynamic.png": (3, 5)}
    wide = images.read_image(str(tmp_path / "wide.png"))
    expected = images.to_uint8(with_border_margin(net, wide)).astype(int)
    assert np.abs(images.read_image(str(tmp_path / "out" / "wide_dynamic.png")) -
                  expected).max() <= 2

    result = run_stylize([f"--model={fixed}", "--output=fixed", "wide.png", "square.png"],
                         tmp_path)
    assert result.returncode == 1
    lines = [line for line in result.stderr.splitlines() if line.startswith("kperceptual.")]
    assert lines == ["kperceptual.stylize: wide.png: the model takes only 32x32 inputs, not "
                     "45x30 (export with --input_size=0 for any size)",
                     "kperceptual.stylize: 1 of 2 inputs failed"], result.stderr[-800:]
    assert _png_sizes(tmp_path / "fixed") == {"square_fixed.png": (32, 32)}

    tiled = run_stylize([f"--model={dynamic}", "--tile=512", "wide.png"], tmp_path)
    assert tiled.returncode == 2
    assert f"kperceptual.stylize: --tile: tiling needs the Keras network, which {dynamic} " \
           "does not carry" in tiled.stderr


@pytest.mark.slow
def test_outputs_inside_the_input_folder_literal_names_and_duplicates(tmp_path, keras_model):
    photos = tmp_path / "photos"
    photos.mkdir()
    _write(photos / "a.png", (20, 24))
    _write(photos / "b[1].png", (20, 24), seed=1)
    out = photos / "out"
    for _ in range(2):  # the second run must not take the first run's outputs as inputs
        result = run_stylize([f"--model={keras_model}", f"--output={out}", "--overwrite",
                              "photos", "photos/a.png", "photos/*.png"], tmp_path)
        assert result.returncode == 0, result.stderr[-800:]
        assert sorted(_png_sizes(out)) == ["a_tiny_style.png", "b[1]_tiny_style.png"]
        assert len([line for line in result.stdout.splitlines() if " -> " in line]) == 2

    # A literal name with glob characters is that file, not a pattern matching nothing.
    literal = run_stylize([f"--model={keras_model}", "--output=literal", "photos/b[1].png"],
                          tmp_path)
    assert literal.returncode == 0, literal.stderr[-800:]
    assert sorted(_png_sizes(tmp_path / "literal")) == ["b[1]_tiny_style.png"]


def _read_video(path):
    import imageio.v2 as imageio

    reader = imageio.get_reader(str(path))
    try:
        return [np.asarray(frame) for frame in reader]
    finally:
        reader.close()


@pytest.mark.slow
def test_video_frames_are_stylised_and_a_broken_video_goes_on(tmp_path, photos, keras_model):
    import imageio.v2 as imageio

    from kperceptual.inference import stylizer as inference

    frames = [images.resize(np.roll(photos["coffee"], 12 * i, axis=1), 48, 64) for i in range(5)]
    imageio.mimwrite(str(tmp_path / "clip.mp4"), frames, fps=10, macro_block_size=1)
    (tmp_path / "empty.mp4").write_bytes(b"")
    (tmp_path / "junk.mp4").write_bytes(b"\x00\x00\x00\x18ftypmp42 definitely not a video")
    result = run_stylize([f"--model={keras_model}", "--output=out", "--batch_size=2",
                          "empty.mp4", "clip.mp4", "junk.mp4"], tmp_path)
    assert result.returncode == 1
    lines = [line for line in result.stderr.splitlines() if line.startswith("kperceptual.")]
    assert len(lines) == 3 and lines[-1] == "kperceptual.stylize: 2 of 3 inputs failed", lines
    for name in ("empty.mp4", "junk.mp4"):
        assert sum(f"kperceptual.stylize: {name}: not a readable video" in line
                   for line in lines) == 1, name
    assert sorted(os.listdir(tmp_path / "out")) == ["clip_tiny_style.mp4"]

    decoded_in = _read_video(tmp_path / "clip.mp4")
    decoded_out = _read_video(tmp_path / "out" / "clip_tiny_style.mp4")
    assert len(decoded_out) == len(decoded_in) == 5
    # The untrained network's output is busy, so H.264 leaves a large error; still each
    # written frame is far nearer its own stylised frame than the source or another frame's.
    stylizer = inference.Stylizer(keras_model)
    expected = [stylizer.image(source).astype(float) for source in decoded_in]
    for i, (source, written) in enumerate(zip(decoded_in, decoded_out)):
        distances = [np.abs(written - e).mean() for e in expected]
        to_source = np.abs(written - source.astype(float)).mean()
        assert int(np.argmin(distances)) == i, distances
        assert to_source > 2.5 * distances[i], (distances[i], to_source)


def test_a_shipped_model_by_name_from_any_folder(tmp_path, photos):
    # The working folder has no savedmodels/: the name resolves among the shipped models, found
    # from the package, and the output says which version was used.
    images.write_image(str(tmp_path / "cat.png"), photos["chelsea"][:48, :64])
    result = run_stylize(["--model=starry_night", f"--output={tmp_path / 'out'}", "cat.png"],
                         tmp_path)
    assert result.returncode == 0, result.stderr
    assert (tmp_path / "out" / "cat_starry_night.png").is_file()
    from kperceptual.serving import layout
    from kperceptual.inference import loading as models

    newest = layout.latest_version_path(models.shipped_models_dir(), "starry_night")
    assert result.stdout.splitlines()[0] == f"model: {os.path.normpath(newest)}"
    missing = run_stylize(["--model=no_such_model", "cat.png"], tmp_path)
    assert missing.returncode == 2
    assert "no_such_model: not a .keras or .tflite file" in missing.stderr
    assert "or among the shipped models" in missing.stderr


def _ffmpeg_clip(path, audio: bool):
    import imageio_ffmpeg

    inputs = ["-f", "lavfi", "-i", "testsrc=size=64x48:rate=10"]
    if audio:
        inputs += ["-f", "lavfi", "-i", "sine=frequency=440:sample_rate=22050"]
    subprocess.run([imageio_ffmpeg.get_ffmpeg_exe(), "-v", "error", "-y", *inputs, "-t", "1",
                    "-c:v", "libx264", "-pix_fmt", "yuv420p",
                    *(["-c:a", "aac"] if audio else []), str(path)], check=True)


def _streams(path):
    import imageio_ffmpeg

    probe = subprocess.run([imageio_ffmpeg.get_ffmpeg_exe(), "-hide_banner", "-i", str(path)],
                           capture_output=True, text=True)
    return [line.split(":", 2)[-1].split(":")[0].strip()
            for line in probe.stderr.splitlines() if line.strip().startswith("Stream #")]


def test_a_video_keeps_its_sound(tmp_path, keras_model):
    from kperceptual.inference import video

    _ffmpeg_clip(tmp_path / "talk.mp4", audio=True)
    _ffmpeg_clip(tmp_path / "silent.mp4", audio=False)
    assert _streams(tmp_path / "talk.mp4") == ["Video", "Audio"]
    result = video.stylize_video(keras_model, str(tmp_path / "talk.mp4"),
                                 str(tmp_path / "talk_out.mp4"))
    assert result.audio and result.frames == 10
    assert _streams(tmp_path / "talk_out.mp4") == ["Video", "Audio"]
    assert len(_read_video(tmp_path / "talk_out.mp4")) == 10
    silent = video.stylize_video(keras_model, str(tmp_path / "silent.mp4"),
                                 str(tmp_path / "silent_out.mp4"))
    assert not silent.audio and _streams(tmp_path / "silent_out.mp4") == ["Video"]
    assert sorted(os.listdir(tmp_path)) == ["silent.mp4", "silent_out.mp4", "talk.mp4",
                                            "talk_out.mp4"]  # no temporary left
