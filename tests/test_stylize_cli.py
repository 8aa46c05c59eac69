"""``python -m kperceptual.stylize``: a trained network applied to a folder, bad files reported."""

import os
import subprocess
import sys

import numpy as np
import pytest

from conftest import REPO
from kperceptual import images, networks


@pytest.fixture(scope="module")
def keras_model(tmp_path_factory):
    path = tmp_path_factory.mktemp("model") / "tiny_style.keras"
    networks.StyleTransferNetwork(filters=(8, 8, 8), num_residual_blocks=1).save(str(path))
    return str(path)


def run_stylize(args, cwd):
    env = dict(os.environ, PYTHONPATH=REPO, TF_CPP_MIN_LOG_LEVEL="3")
    return subprocess.run([sys.executable, "-m", "kperceptual.stylize", *args], cwd=cwd, env=env,
                          capture_output=True, text=True)


def test_folder_with_a_bad_file_goes_on_and_exits_1(tmp_path, photo_folder, keras_model):
    out = tmp_path / "out"
    result = run_stylize([f"--model={keras_model}", f"--output={out}", "--max_size=64",
                          str(photo_folder)], tmp_path)
    assert result.returncode == 1
    assert f"kperceptual.stylize: {photo_folder / 'broken.jpg'}: not a readable image" in \
        result.stderr
    written = sorted(os.listdir(out))
    assert written == ["astronaut_tiny_style.png", "chelsea_tiny_style.png",
                       "coffee_tiny_style.png"]
    chelsea = images.read_image(str(out / "chelsea_tiny_style.png"))
    assert chelsea.shape == (43, 64, 3)  # 300 x 451 resized to a long side of 64

    # Running again replaces nothing without --overwrite.
    before = (out / "chelsea_tiny_style.png").stat().st_mtime_ns
    again = run_stylize([f"--model={keras_model}", f"--output={out}", "--max_size=64",
                         str(photo_folder / "sub" / "chelsea.png")], tmp_path)
    assert again.returncode == 1 and "already exists" in again.stderr
    assert (out / "chelsea_tiny_style.png").stat().st_mtime_ns == before


def test_saved_model_by_name_matches_the_keras_model(tmp_path, photos, keras_model):
    import keras

    from kperceptual import export

    net = keras.saving.load_model(keras_model)
    export.export_saved_model(net, str(tmp_path / "savedmodels"), "tiny_style")
    images.write_image(str(tmp_path / "coffee.png"), images.resize_long_side(photos["coffee"], 60))
    result = run_stylize(["--model=tiny_style", "--models_dir=savedmodels", "--output=out",
                          "coffee.png"], tmp_path)
    assert result.returncode == 0, result.stderr[-1500:]
    served = images.read_image(str(tmp_path / "out" / "coffee_tiny_style.png"))
    expected = images.to_uint8(net(images.read_image(str(tmp_path / "coffee.png"))[None]
                                   .astype(np.float32))[0])
    assert np.abs(served.astype(int) - expected.astype(int)).max() <= 1


def test_unknown_model_is_one_line_and_exit_2(tmp_path):
    result = run_stylize(["--model=no_such_model", "x.jpg"], tmp_path)
    assert result.returncode == 2
    assert result.stderr.strip().splitlines()[-1].startswith("kperceptual.stylize: --model: ")
