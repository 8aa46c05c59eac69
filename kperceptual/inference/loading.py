"""Trained networks by name or path, for every command that applies one.

A model is

* a name under ``--models_dir`` (the user's models: default ``layout.user_models_dir()``,
  ``~/.keras/kperceptual/models``) or, where it has none of that name, among the models this project ships (``shipped_models_dir``: found
  from the package, so from any folder and after ``pip install .``); its newest version,
* a SavedModel folder (TF Serving's ``<name>/<version>/`` or any other), or a model's folder
  of versions (``<name>/``: its newest),
* a ``.keras`` file, or a Keras model folder (``config.json`` and ``model.weights.h5``, what
  ``keras.saving.save_model`` writes to a hub),
* a hub handle, loaded the way Keras loads presets: ``hf://OWNER/REPO`` (Keras's own Hugging
  Face loading; needs ``huggingface_hub``), ``kaggle://OWNER/MODEL/keras/VARIANT[/VERSION]``
  (downloaded with ``kagglehub``) or ``file://PATH`` (a local file or folder; what the tests use,
  as no hub is reachable from this project's machines), or
* a ``.tflite`` file (run with LiteRT).

SavedModels need TensorFlow; ``.keras`` files load on any Keras backend; ``.tflite`` files need
only ``ai-edge-litert``. SavedModels written by ``kperceptual.export`` carry their Keras network
in ``assets/network.keras``, so a model name gives the Keras network too (needed for exact
tiling and for TFLite conversion).

Trust: a SavedModel's graph is a program (TensorFlow's SECURITY.md): loading one runs whatever
operations it holds, files and network included. Where a SavedModel carries its Keras network,
that network (loaded in Keras's ``safe_mode``, which runs no code from the file) does the work
and the graph is never loaded; a SavedModel without one is loaded as a graph, so give only
SavedModels you trust.
"""

from __future__ import annotations

import dataclasses
import os
import weakref
from typing import Any, Callable

import keras
import numpy as np

from kperceptual.serving.layout import (NETWORK_ASSET, latest_version_path,  # noqa: F401
                                       user_models_dir, versions)

_PACKAGE = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))  # kperceptual/
# Where the shipped models are: inside an installed package (setup.py installs the repository's
# savedmodels/ as kperceptual/savedmodels), or beside the package in a clone or an editable
# install (the repository's savedmodels/).
SHIPPED_MODEL_DIRS = (os.path.join(_PACKAGE, "savedmodels"),
                      os.path.join(os.path.dirname(_PACKAGE), "savedmodels"))


def shipped_models_dir() -> str | None:
    """The folder of the models this project ships (TF Serving's layout), or None."""
    return next((d for d in SHIPPED_MODEL_DIRS if os.path.isdir(d)), None)


def describe(version_path: str) -> dict:
    """What a kperceptual SavedModel holds, read from its network's config (nothing is
    loaded): ``{"task": "style" | "super_resolution" | "?", "styles": [...], "scale": int}``."""
    import json
    import zipfile

    try:
        with zipfile.ZipFile(os.path.join(version_path, NETWORK_ASSET)) as archive:
            spec = json.loads(archive.read("config.json"))
    except (OSError, KeyError, ValueError, zipfile.BadZipFile):
        return {"task": "?", "styles": [], "scale": 1}
    config = spec.get("config", {})
    if spec.get("class_name") == "SuperResolutionNetwork":
        return {"task": "super_resolution", "styles": [], "scale": int(config.get("scale", 1)),
                "loss": config.get("loss", "")}
    return {"task": "style", "styles": list(config.get("style_names") or []), "scale": 1}


def available_models(models_dir: str | None = None) -> list[dict]:
    """Every model a name can load: those in ``models_dir`` first (the user's), then the
    shipped ones, each ``{"name", "version", "path", "source", "shadowed"}`` plus ``describe``'s
    keys; a shipped model with the name of one of the user's is ``shadowed`` (the name loads
    the user's). ``models_dir`` defaults to ``layout.user_models_dir()``."""
    models_dir = models_dir or user_models_dir()
    found, seen = [], set()
    shipped = shipped_models_dir()
    places = [(models_dir, "yours")]
    if shipped and (not os.path.isdir(models_dir) or not os.path.samefile(models_dir, shipped)):
        places.append((shipped, "shipped"))
    for folder, source in places:
        names = sorted(os.listdir(folder)) if os.path.isdir(folder) else []
        for name in names:
            path = latest_version_path(folder, name)
            if path is None or not os.path.isfile(os.path.join(path, "saved_model.pb")):
                continue
            is_shipped = source == "shipped" or (shipped and os.path.samefile(folder, shipped))
            found.append({"name": name, "version": int(os.path.basename(path)), "path": path,
                          "source": "shipped" if is_shipped else source,
                          "shadowed": name in seen, **describe(path)})
            seen.add(name)
    return found


@dataclasses.dataclass
class LoadedModel:
    """A transformation network ready to apply.

    ``fn`` maps float32 pixels ``(B, H, W, 3)`` in [0, 255] to pixels in [0, 255] (float or
    uint8), ``(B, H * scale, W * scale, 3)`` (for a SavedModel, a ``LazySavedModel`` that loads
    the graph on its first call). ``network`` is the Keras model when one is
    available (``.keras`` files and kperceptual SavedModels), else None.
    """

    name: str
    path: str
    kind: str  # "keras", "saved_model" or "tflite"
    fn: Callable[[np.ndarray], Any]
    network: Any = None
    shadows: str = ""  # the shipped model of the same name a name of the user's hides, if any

    def describe(self) -> str:
        """Which model this is, in one line: its path, and a shipped model it hides."""
        where = self.path or self.name
        return where + (f" (yours; it hides the shipped {self.shadows}: give that one's path "
                        "to use it)" if self.shadows else "")


def load_keras_network(path: str):
    """A ``.keras`` transformation network, with kperceptual's classes registered, loaded in
    Keras's ``safe_mode``: a file holding Python code (a ``Lambda`` layer's bytecode) is refused
    with a ``ValueError`` instead of run."""
    import keras

    from kperceptual import networks  # noqa: F401  (registers the classes)

    return keras.saving.load_model(path, safe_mode=True)


# network -> its rewritten forward (TensorFlow backend): one per network, however many
# forwards or Stylizers use it; and the pixels each network has run before it was rewritten.
_REWRITTEN = weakref.WeakKeyDictionary()
_PIXELS_RUN = weakref.WeakKeyDictionary()
# Rewriting and compiling the default network takes about 2.7 s on this project's 2-core CPU
# against 0.5 s for predict_on_batch's first call, and saves about 0.2 s per million pixels
# (bfloat16): a network is rewritten once it has been asked for this many pixels (a few large
# photos, a few batches of video frames), and small jobs never pay for it.
REWRITE_AFTER_PIXELS = 4_000_000


def keras_forward(network) -> Callable[[np.ndarray], np.ndarray]:
    """``network``'s forward pass as a function of float32 pixels (B, H, W, 3) -> numpy.

    ``predict_on_batch``, which compiles the forward pass: faster than an eager call and needs
    less memory. On the TensorFlow backend (TensorFlow only: ``serving.tf_rewrite``) a
    one-input network that has been asked for ``REWRITE_AFTER_PIXELS`` pixels (this call's
    included) runs rewritten into faster TensorFlow ops from then on, the same outputs up to
    float rounding, with its weights as they are then (a network trained on afterwards runs
    with its old weights here); docs/benchmarks.md, "Inference", has the times."""
    def predict(x):
        return np.asarray(network.predict_on_batch(np.asarray(x, np.float32)))

    if keras.backend.backend() != "tensorflow" or len(network.inputs) != 1:
        return predict

    def forward(x):
        compiled = _REWRITTEN.get(network)
        if compiled is None:
            pixels = _PIXELS_RUN.get(network, 0) + int(np.prod(np.shape(x)[:3]))
            if pixels < REWRITE_AFTER_PIXELS:
                _PIXELS_RUN[network] = pixels
                return predict(x)
            from kperceptual.serving.tf_rewrite import tensorflow_forward

            compiled = _REWRITTEN[network] = tensorflow_forward(network)
        return compiled(x)
    return forward


class LazySavedModel:
    """A kperceptual SavedModel's ``serving_float`` signature as a function, loaded on its
    first call (the Keras network in ``assets/`` usually does the work instead)."""

    def __init__(self, path: str):
        self.path = path
        self._fn = None

    @property
    def loaded(self) -> bool:
        return self._fn is not None

    def load(self):
        """Loads the graph now (ValueError naming the path if it is not kperceptual's)."""
        if self._fn is None:
            from kperceptual.serving import tf_saved_model

            self._fn = tf_saved_model.load_saved_model(self.path)
        return self._fn

    def __call__(self, pixels) -> np.ndarray:
        return self.load()(pixels)


def _load_keras_file(path: str):
    """``load_keras_network``, with every way a damaged file fails as one ``ValueError`` line
    naming it."""
    import zipfile

    folder = os.path.isfile(os.path.join(path, "config.json"))  # a Keras model folder
    if not folder and not path.startswith("hf://") and not zipfile.is_zipfile(path):
        raise ValueError(f"{path}: not a Keras archive (a .keras file is a zip archive)")
    try:
        return load_keras_network(path)
    except Exception as e:  # Keras raises many kinds for damaged archives  # noqa: BLE001
        text = str(e.args[0]) if isinstance(e, KeyError) and e.args else str(e)
        first = (text.strip().splitlines() or [type(e).__name__])[0]
        raise ValueError(f"{path}: cannot load ({first})") from e


HUB_SCHEMES = {"hf://": "huggingface_hub", "kaggle://": "kagglehub", "file://": None}


def _hub_path(spec: str) -> str:
    """A local path or Keras-loadable URI for the hub handle ``spec``."""
    scheme = next(s for s in HUB_SCHEMES if spec.startswith(s))
    package = HUB_SCHEMES[scheme]
    if package:
        try:
            hub = __import__(package)
        except ImportError:
            raise ValueError(f"{spec}: needs the {package} package (pip install {package})") from None
    if scheme == "file://":
        return spec[len(scheme):]
    if scheme == "kaggle://":
        return hub.model_download(spec[len(scheme):])
    return spec  # hf://: keras.saving.load_model fetches it


def _load_handle(spec: str) -> LoadedModel:
    path = _hub_path(spec)
    if os.path.isdir(path) and not os.path.isfile(os.path.join(path, "config.json")):
        found = sorted(f for f in os.listdir(path) if f.endswith(".keras"))
        if len(found) != 1:
            raise ValueError(f"{spec}: expected one .keras file or a Keras model folder "
                             f"(config.json), found {len(found)} .keras files")
        path = os.path.join(path, found[0])
    if not path.startswith("hf://") and not os.path.exists(path):
        raise FileNotFoundError(f"{spec}: no such file or folder")
    network = _load_keras_file(path)
    name = os.path.splitext(os.path.basename(os.path.normpath(spec)))[0]
    return LoadedModel(name, spec, "keras", keras_forward(network), network)


def load_model(spec: str, models_dir: str | None = None) -> LoadedModel:
    """Loads ``spec`` (see the module docstring); raises FileNotFoundError or ValueError with a
    one-line message naming ``spec``. ``models_dir`` defaults to ``layout.user_models_dir()``."""
    models_dir = models_dir or user_models_dir()
    shadows = ""
    if spec.startswith(tuple(HUB_SCHEMES)):
        return _load_handle(spec)
    if os.path.isfile(os.path.join(spec, "config.json")) and os.path.isfile(
            os.path.join(spec, "model.weights.h5")):  # a Keras model folder
        return _load_handle("file://" + spec)
    stem = os.path.splitext(os.path.basename(os.path.normpath(spec)))[0]
    if spec.endswith(".keras"):
        if not os.path.isfile(spec):
            raise FileNotFoundError(f"{spec}: no such file")
        network = _load_keras_file(spec)
        return LoadedModel(stem, spec, "keras", keras_forward(network), network)
    if spec.endswith(".tflite"):
        if not os.path.isfile(spec):
            raise FileNotFoundError(f"{spec}: no such file")
        from kperceptual.serving.litert import TFLiteModel

        return LoadedModel(stem, spec, "tflite", TFLiteModel(spec))
    if os.path.isfile(os.path.join(spec, "saved_model.pb")):
        path = spec
    elif os.path.isdir(spec):  # a model's folder of versions, as savedmodels/<name>
        path = latest_version_path(os.path.dirname(os.path.normpath(spec)) or ".",
                                          os.path.basename(os.path.normpath(spec)))
    else:
        path = latest_version_path(models_dir, spec)
        shipped = shipped_models_dir()
        theirs = (latest_version_path(shipped, spec)
                  if shipped and os.sep not in spec and "/" not in spec else None)
        if path is None:
            path = theirs
        elif theirs and not os.path.samefile(path, theirs):
            shadows = theirs
    if path is None or not os.path.isfile(os.path.join(path, "saved_model.pb")):
        raise FileNotFoundError(f"{spec}: not a .keras or .tflite file, a SavedModel folder, or "
                                f"a model name in {models_dir}/ or among the shipped models")
    path = os.path.normpath(path)
    name = os.path.basename(path)
    if name.isdigit():  # savedmodels/<name>/<version>
        name = os.path.basename(os.path.dirname(path))
    asset = os.path.join(path, NETWORK_ASSET)
    network = _load_keras_file(asset) if os.path.isfile(asset) else None
    fn = LazySavedModel(path)
    if network is None:
        fn.load()  # needed anyway; a SavedModel kperceptual did not write fails here
    return LoadedModel(name, path, "saved_model", fn, network, shadows)
