"""``python -m kperceptual.optimize`` as a user runs it: bad inputs, a real run, no overwrite."""

import os
import struct
import subprocess
import sys
import zlib

import numpy as np
import pytest

from helpers import REPO
from kperceptual.imaging import images


def run_optimize(args, cwd):
    env = dict(os.environ, PYTHONPATH=REPO, TF_CPP_MIN_LOG_LEVEL="3")
    return subprocess.run([sys.executable, "-m", "kperceptual.optimize", *args], cwd=cwd,
                          env=env, capture_output=True, text=True, timeout=600)


def png_chunk(kind: bytes, data: bytes) -> bytes:
    return (struct.pack(">I", len(data)) + kind + data
            + struct.pack(">I", zlib.crc32(kind + data) & 0xFFFFFFFF))


@pytest.fixture
def files(tmp_path, photos):
    images.write_image(str(tmp_path / "content.png"), images.resize_long_side(photos["chelsea"], 40))
    images.write_image(str(tmp_path / "style.jpg"), photos["coffee"])
    images.write_image(str(tmp_path / "tiny.png"), photos["coffee"][:4, :4])
    (tmp_path / "notes.txt").write_text("not an image")
    (tmp_path / "empty.png").write_bytes(b"")
    # A well-formed PNG header that declares a 0 x 0 image.
    (tmp_path / "zero.png").write_bytes(
        b"\x89PNG\r\n\x1a\n" + png_chunk(b"IHDR", struct.pack(">IIBBBBB", 0, 0, 8, 2, 0, 0, 0))
        + png_chunk(b"IDAT", zlib.compress(b"")) + png_chunk(b"IEND", b""))
    (tmp_path / "taken.png").write_bytes(b"keep me")
    images.write_image(str(tmp_path / "out_0002.png"), images.resize_long_side(photos["coffee"], 40))
    return tmp_path


GOOD = ["--content=content.png", "--style=style.jpg", "--output=out.png"]


@pytest.mark.parametrize("args,message", [
    (["--content=missing.jpg"], "--content: missing.jpg: no such file"),
    (["--style=notes.txt"], "--style: notes.txt: not a readable image"),
    (["--content=empty.png"], "--content: empty.png: empty file (0 bytes)"),
    (["--content=zero.png"], "--content: zero.png: "),
    (["--style_layers=relu1_2,relu6_1"], "--style_layers: unknown VGG16 layer relu6_1"),
    (["--content_layers=conv2_2"], "--content_layers: unknown VGG16 layer conv2_2"),
    (["--image_size=0", "--content=tiny.png"], "--content: tiny.png: 4x4 pixels (after resizing) "
                                               "is too small"),
    (["--output=taken.png"], "--output: taken.png: already exists (pass --overwrite"),
    (["--output=out.txt"], "--output: out.txt: name an image file"),
    (["--output=content.png", "--overwrite"], "--output: content.png: is the --content"),
    (["--optimizer=sgd"], "--optimizer: unknown value 'sgd'"),
    (["--init=zeros"], "--init: unknown value 'zeros'"),
    (["--init=image", "--init_image=missing.png"], "--init_image: missing.png: no such file"),
    (["--iterations=0"], "--iterations: must be positive"),
    (["--style_weight=-1"], "--style_weight: must be a finite number >= 0"),
    (["--precision=float8"], "--precision: unknown value 'float8'"),
    (["--iterations=many"], "--iterations"),
    (["--content_layers=relu2_2,"], "--content_layers: has an empty layer name"),
    (["--save_every=500", "--iterations=500"], "--save_every: 500 is not below --iterations"),
    (["--output=notes.txt/out.png"], "--output: notes.txt/out.png: cannot be written"),
    (["--output=.png"], "--output: .png: name an image file"),
    (["--save_every=2", "--iterations=4", "--content=out_0002.png", "--overwrite"],
     "--save_every: out_0002.png: is the --content"),
    (["--image_size=100000"], "--image_size: a 100000x67500 image needs about"),
])
@pytest.mark.slow
def test_bad_inputs_exit_2_with_one_line(files, args, message):
    result = run_optimize(GOOD + args, files)
    assert result.returncode == 2, result.stderr
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1, result.stderr
    assert lines[0].startswith("kperceptual.optimize: ") and message in lines[0], lines[0]
    assert (files / "taken.png").read_bytes() == b"keep me"
    assert not (files / "out.png").exists()
    assert images.read_image(str(files / "out_0002.png")).shape[1] == 40


@pytest.mark.parametrize("settings,message", [
    (dict(init="image"), "--init_image: required with --init=image"),
    (dict(init_image="style.jpg"), "--init_image: given, but --init=noise; pass --init=image"),
    (dict(init="image", init_image="notes.txt"), "--init_image: notes.txt: not a readable image"),
    (dict(init="image", init_image="tiny.png"),
     "--init_image: tiny.png: its aspect ratio (4x4 pixels) is more than 2% from the content's "
     "(512x346 after resizing)"),
    (dict(init="image", init_image="taken.png", output="taken.png", overwrite=True),
     "--output: taken.png: is the --init_image"),
])
def test_init_image_is_checked_before_any_work(files, monkeypatch, settings, message):
    # The checks optimize runs before the framework starts (its exit with one line is the
    # --init_image: missing.png case above).
    from kperceptual import config as config_lib

    monkeypatch.chdir(files)
    config = config_lib.GatysConfig(**{"content": "content.png", "style": "style.jpg",
                                       "output": "out.png", **settings})
    with pytest.raises(config_lib.ConfigError) as raised:
        config_lib.validate_gatys(config)
    assert message in str(raised.value)
    assert (files / "taken.png").read_bytes() == b"keep me"


def test_missing_required_flag(files):
    result = run_optimize(["--content=content.png", "--output=out.png"], files)
    assert result.returncode == 2
    assert result.stderr.strip() == "kperceptual.optimize: --style: required"


@pytest.mark.slow
def test_a_run_writes_output_and_snapshots_and_never_overwrites(files):
    (files / "out_0002.png").unlink()
    args = GOOD + ["--image_size=32", "--iterations=4", "--save_every=2", "--precision=float32",
                   "--style_size=40"]
    result = run_optimize(args, files)
    assert result.returncode == 0, result.stderr
    assert "wrote out.png: objective" in result.stdout
    style = images.resize_long_side(images.skimage_photo("coffee"), 40)
    assert f"style image {style.shape[1]}x{style.shape[0]})" in result.stdout  # --style_size
    out = images.read_image(str(files / "out.png"))
    content = images.resize_long_side(images.read_image(str(files / "content.png")), 32)
    assert out.shape == content.shape
    assert (files / "out_0002.png").exists()
    assert np.abs(out.astype(int) - content).mean() > 10  # from white noise, not the content

    before = (files / "out.png").read_bytes()
    again = run_optimize(args, files)
    assert again.returncode == 2
    assert "--output: out.png: already exists" in again.stderr
    assert (files / "out.png").read_bytes() == before

    (files / "out.png").unlink()
    snapshot = run_optimize(args, files)  # the snapshot from the first run is still there
    assert snapshot.returncode == 2
    assert "--save_every: " in snapshot.stderr and "out_0002.png: already exists" in snapshot.stderr

    replaced = run_optimize(args + ["--overwrite", "--init=content", "--optimizer=adam"], files)
    assert replaced.returncode == 0, replaced.stderr
    assert (files / "out.png").exists()

    # Refining an image: the run starts from it (at the content's size) and leaves it as it was.
    start = (files / "out.png").read_bytes()
    refined = run_optimize([a.replace("out.png", "refined.png") for a in args]
                           + ["--init=image", "--init_image=out.png"], files)
    assert refined.returncode == 0, refined.stderr
    assert "pixels from out.png" in refined.stdout
    assert (files / "out.png").read_bytes() == start
    refined_image = images.read_image(str(files / "refined.png"))
    assert refined_image.shape == content.shape
    # It went on from out.png (near the content, as Adam started there), not from noise.
    assert np.abs(refined_image.astype(int) - images.read_image(str(files / "out.png"))).mean() < 10
