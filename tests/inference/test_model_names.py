"""Models by name: the user's models_dir first, then the shipped ones found from the package;
``python -m kperceptual.models`` lists both and says when a user's model shadows a shipped one."""

import os
import shutil
import subprocess
import sys

from helpers import REPO
from kperceptual.inference import loading as models


def test_the_shipped_models_are_found_from_the_package_and_described():
    shipped = models.shipped_models_dir()
    assert shipped and os.path.samefile(shipped, os.path.join(REPO, "savedmodels"))
    listed = {m["name"]: m for m in models.available_models("no_such_folder")}
    assert listed["starry_night"]["task"] == "style"
    assert listed["sr_x4_pixel"]["task"] == "super_resolution"
    assert listed["sr_x4_pixel"]["scale"] == 4
    assert all(m["source"] == "shipped" and not m["shadowed"] for m in listed.values())


def test_a_model_of_your_own_with_a_shipped_name_is_listed_as_shadowing_it(tmp_path):
    shipped = models.latest_version_path(models.shipped_models_dir(), "starry_night")
    mine = tmp_path / "my_models" / "starry_night" / "7"
    shutil.copytree(shipped, mine)
    listed = [m for m in models.available_models(str(tmp_path / "my_models"))
              if m["name"] == "starry_night"]
    assert [(m["source"], m["version"], m["shadowed"]) for m in listed] == [
        ("yours", 7, False), ("shipped", int(os.path.basename(shipped)), True)]
    loaded = models.load_model("starry_night", str(tmp_path / "my_models"))
    assert loaded.path == str(mine) and loaded.shadows == shipped
    assert f"(yours; it hides the shipped {shipped}" in loaded.describe()
    # The user's models are apart from the shipped ones: KPERCEPTUAL_MODELS, else ~/.keras.
    done = subprocess.run([sys.executable, "-m", "kperceptual.models"], cwd=tmp_path,
                          capture_output=True, text=True,
                          env=dict(os.environ, PYTHONPATH=REPO,
                                   KPERCEPTUAL_MODELS=str(tmp_path / "my_models")))
    assert done.returncode == 0, done.stderr
    lines = [line for line in done.stdout.splitlines() if line.startswith("starry_night")]
    assert lines[0].split()[:3] == ["starry_night", "v7", "yours"]
    assert "shadowed by yours" in lines[1]


def test_init_from_takes_a_shipped_name(tmp_path):
    from helpers import small_config
    from kperceptual import config as config_lib

    config_lib.validate(small_config(tmp_path, init_from="starry_night"))  # export_dir is empty
    try:
        config_lib.validate(small_config(tmp_path, init_from="no_such_model"))
    except config_lib.ConfigError as e:
        assert "or among the shipped models" in str(e)
    else:
        raise AssertionError("an unknown --init_from name was accepted")


def test_your_models_live_apart_from_the_shipped_ones(tmp_path, monkeypatch):
    from kperceptual.serving import layout

    monkeypatch.delenv("KPERCEPTUAL_MODELS")
    monkeypatch.setenv("KERAS_HOME", str(tmp_path / "keras_home"))
    assert layout.user_models_dir() == str(tmp_path / "keras_home" / "kperceptual" / "models")
    monkeypatch.setenv("KPERCEPTUAL_MODELS", str(tmp_path / "mine"))
    assert layout.user_models_dir() == str(tmp_path / "mine")
    # training writes there unless told otherwise, never into the shipped folder
    from kperceptual import config as config_lib

    assert config_lib.StyleTrainingConfig(style_image="skimage:chelsea").export_dir == str(
        tmp_path / "mine")


def test_load_by_name_and_by_hub_handle_as_keras_loads_presets(tmp_path, photos):
    """kperceptual.load takes what the commands take; hub handles go through Keras's own loading
    (hf:// needs the network, so the handle tested here is a local file:// one, of both forms a
    hub holds: a .keras file and a Keras model folder of config.json + model.weights.h5)."""
    import zipfile

    import numpy as np

    import kperceptual

    shipped = kperceptual.load("starry_night")
    assert shipped.network is not None and shipped.path.startswith(models.shipped_models_dir())
    keras_file = os.path.join(shipped.path, "assets", "network.keras")
    folder = tmp_path / "starry_night_folder"
    with zipfile.ZipFile(keras_file) as z:
        z.extractall(folder)
    assert sorted(os.listdir(folder))[:2] == ["config.json", "metadata.json"]
    x = photos["chelsea"][:64, :64].astype(np.float32)[None]
    # The same network as the shipped model's (its SavedModel's fn also applies the border
    # margin; a .keras file's fn is the network itself).
    want = np.asarray(shipped.network(x))
    for spec in (f"file://{keras_file}", f"file://{folder}", str(folder),
                 f"file://{os.path.dirname(keras_file)}"):  # a folder holding one .keras file
        got = kperceptual.load(spec)
        assert got.kind == "keras", spec
        np.testing.assert_allclose(got.fn(x), want, atol=1e-3, err_msg=spec)
    for spec, message in ((f"file://{tmp_path / 'nothing'}", "no such file or folder"),
                          (f"file://{tmp_path}", "expected one .keras file")):
        try:
            kperceptual.load(spec)
        except (ValueError, FileNotFoundError) as e:
            assert message in str(e) and spec in str(e), e
        else:
            raise AssertionError(f"{spec} loaded")
