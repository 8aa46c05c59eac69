"""The named choices a user makes, in the paper's words; importable without Keras or TensorFlow,
so that flags are checked before any framework starts."""

from __future__ import annotations

# The loss network's layers: paper names -> keras.applications.VGG16 layer names
# (Keras's VGG16 convs include their ReLU).
VGG16_LAYERS = {
    f"relu{block}_{conv}": f"block{block}_conv{conv}"
    for block, convs in ((1, 2), (2, 2), (3, 3), (4, 3), (5, 3))
    for conv in range(1, convs + 1)
}
VGG16_LAYERS.update({f"pool{block}": f"block{block}_pool" for block in range(1, 6)})

CONTENT_LAYERS = ("relu2_2",)  # the paper's content layer for style transfer
STYLE_LAYERS = ("relu1_2", "relu2_2", "relu3_3", "relu4_3")  # the paper's style layers

WEIGHT_SOURCES = ("torchvision", "imagenet")
STYLE_REDUCTIONS = ("sum", "mean")
NORMS = ("instance", "batch", "none")  # none: no normalisation (EDSR-style SR networks)
UPSAMPLES = ("resize", "transpose")
PADDINGS = ("reflect", "zero")
PRECISIONS = ("auto", "float32", "mixed_bfloat16", "mixed_float16")
# The Gatys optimiser has no loss scaling, which float16 gradients would need.
GATYS_PRECISIONS = ("auto", "float32", "mixed_bfloat16")
# Applying a network (stylize, evaluate, inference.Stylizer): auto is bfloat16 where the hardware
# computes it natively (precision.resolve_precision), else float32. The output convolution and
# head stay float32 in every case.
INFERENCE_PRECISIONS = ("auto", "float32", "bfloat16", "float16")
# Where training runs: auto (tensorflow: MirroredStrategy over the GPUs, else one CPU; jax:
# DataParallel over its devices when there are several; torch: one device), mirrored,
# multi_worker (tensorflow: MultiWorkerMirroredStrategy from TF_CONFIG), data_parallel (jax).
STRATEGIES = ("auto", "mirrored", "multi_worker", "data_parallel")
LOADERS = ("auto", "tf_data", "py_dataset")  # auto: tf.data where TensorFlow is installed
# --jit_compile -> Keras's compile(jit_compile=...). auto: Keras's choice (XLA on JAX; off under
# tf.distribute and on PyTorch). What each costs or saves: docs/benchmarks.md.
JIT_COMPILE = {"auto": "auto", "on": True, "off": False}
TASKS = ("style", "super_resolution")
# Training sources besides a folder: tensorflow-datasets by name, and the photos bundled with
# scikit-image.
TFDS_PREFIX = "tfds:"
SKIMAGE_SOURCE = "skimage"
SR_LOSSES = ("feat", "pixel")  # feature reconstruction at relu2_2 (l_feat), or l_pixel
# Super-resolution output: none (the paper: scaled tanh) or bicubic (global residual learning:
# the network adds a correction to the bicubic upsampling of its input).
RESIDUALS = ("none", "bicubic")
# Style output head: tanh (the paper: 127.5 tanh + 127.5; its gradient vanishes where a region
# saturates, which leaves pinned black or white blobs) or linear (127.5 x + 127.5 with a
# straight-through clip to [0, 255]: every pixel keeps a gradient).
STYLE_HEADS = ("tanh", "linear")
PIXEL_LOSSES = ("l2", "l1")  # l_pixel: squared error (the paper) or absolute error
LR_SCHEDULES = ("constant", "cosine", "step")
HISTOGRAM_MATCH = ("auto", "on", "off")  # auto: on for l_feat models, as in the paper


def check_layers(layers) -> None:
    """Raises ValueError naming any layer that VGG16 does not have."""
    unknown = [name for name in layers if name not in VGG16_LAYERS]
    if unknown:
        raise ValueError(f"unknown VGG16 layer {', '.join(unknown)}; known layers: "
                         f"{', '.join(VGG16_LAYERS)}")


GATYS_OPTIMIZERS = ("lbfgs", "lbfgs_clipped", "adam")
GATYS_INITS = ("noise", "content", "image")


def min_image_side(layers) -> int:
    """The smallest image side for which every one of ``layers`` has at least one pixel:
    VGG16 halves the resolution at each pool, so block b's layers see side / 2**(b - 1)."""
    def pools(name):
        block = int(name[-1]) if name.startswith("pool") else int(name[4])
        return block if name.startswith("pool") else block - 1

    return 2 ** max((pools(name) for name in layers), default=0)

# Edge pixels of each view left out of the training-time stability term
# (losses.stability_loss): there the network's padding sees different pixels in the two views.
STABILITY_BORDER = 16
