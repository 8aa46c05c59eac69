"""The perceptual losses of Johnson et al. (2016), as the paper defines them.

Every function takes channels-last tensors and returns one value per example (shape ``(B,)``),
so that callers can reduce over a global batch (distributed training) or sum over iterations
(the Gatys optimiser) as they need. Backend-neutral: ``keras.ops`` only.

* feature reconstruction loss  l_feat^j(y^, y) = ||phi_j(y^) - phi_j(y)||_2^2 / (C_j H_j W_j)
* Gram matrix                  G_j(x)[c, c'] = sum_{h,w} phi_j(x)[h,w,c] phi_j(x)[h,w,c'] / (C_j H_j W_j)
* style reconstruction loss    l_style^j = ||G_j(y^) - G_j(y_s)||_F^2, summed over the style layers
  (``reduction="sum"``, the paper); ``reduction="mean"`` averages over the C_j x C_j entries
  instead, as jcjohnson/fast-neural-style and pytorch/examples do.
* total variation              l_TV(y) = sum of squared differences between neighbouring pixels
* pixel loss                   l_pixel(y^, y) = ||y^ - y||_2^2 / (C H W)  (or ||y^ - y||_1 / (C H W))
* chroma loss (not the paper's) the squared distance of the Cb, Cr channels of y^ and y after
  average pooling by ``pool``: their colour at low frequencies, which relu2_2 leaves free
"""

from __future__ import annotations

from keras import ops

from kperceptual.choices import PIXEL_LOSSES, STABILITY_BORDER, STYLE_REDUCTIONS


def _per_example_mean(x):
    return ops.mean(ops.reshape(x, (ops.shape(x)[0], -1)), axis=-1)


def feature_reconstruction_loss(features, target_features):
    """l_feat: squared Euclidean distance of feature maps over C*H*W, per example."""
    return _per_example_mean(ops.square(ops.cast(features, "float32")
                                        - ops.cast(target_features, "float32")))


def gram_matrix(features):
    """G(x) = phi^T phi / (C H W) for channels-last features (B, H, W, C) -> (B, C, C)."""
    features = ops.cast(features, "float32")
    shape = ops.shape(features)
    batch, height, width, channels = shape[0], shape[1], shape[2], shape[3]
    flat = ops.reshape(features, (batch, height * width, channels))
    gram = ops.matmul(ops.transpose(flat, (0, 2, 1)), flat)
    return gram / ops.cast(channels * height * width, "float32")


def style_reconstruction_loss(gram, target_gram, reduction="sum"):
    """l_style for one layer: squared Frobenius distance of Gram matrices, per example.

    ``target_gram`` may have batch size 1 (one style image) and is broadcast.
    """
    squared = ops.square(gram - ops.cast(target_gram, "float32"))
    if reduction == "sum":
        return ops.sum(squared, axis=(1, 2))
    if reduction == "mean":
        return ops.mean(squared, axis=(1, 2))
    raise ValueError(f"unknown style reduction {reduction!r}; expected one of {STYLE_REDUCTIONS}")


def total_variation_loss(images):
    """l_TV: sum over the image of squared differences between vertical and horizontal
    neighbours, per example (channels-last)."""
    images = ops.cast(images, "float32")
    dy = images[:, 1:, :, :] - images[:, :-1, :, :]
    dx = images[:, :, 1:, :] - images[:, :, :-1, :]
    return ops.sum(ops.square(dy), axis=(1, 2, 3)) + ops.sum(ops.square(dx), axis=(1, 2, 3))


def pixel_loss(images, targets, distance="l2"):
    """l_pixel: squared Euclidean distance over C*H*W, per example; ``distance="l1"``: the
    mean absolute difference instead."""
    if distance == "l2":
        return feature_reconstruction_loss(images, targets)
    if distance == "l1":
        return _per_example_mean(ops.abs(ops.cast(images, "float32")
                                         - ops.cast(targets, "float32")))
    raise ValueError(f"unknown pixel loss {distance!r}; expected one of {PIXEL_LOSSES}")


# BT.601 full-range chroma (the JPEG convention): Cb and Cr rows of RGB -> YCbCr.
_CHROMA = ((-0.168736, -0.331264, 0.5), (0.5, -0.418688, -0.081312))


def chroma(images):
    """Cb and Cr of RGB pixels (B, H, W, 3) -> (B, H, W, 2), centred on 0 (grey is 0)."""
    matrix = ops.convert_to_tensor([[row[c] for row in _CHROMA] for c in range(3)], "float32")
    return ops.matmul(ops.cast(images, "float32"), matrix)


def chroma_loss(images, targets, pool=1):
    """Squared distance of the chroma of ``images`` and ``targets`` after ``pool`` x ``pool``
    average pooling, per example (pixel levels squared)."""
    a, b = chroma(images), chroma(targets)
    if pool > 1:
        a = ops.average_pool(a, pool, pool, padding="valid")
        b = ops.average_pool(b, pool, pool, padding="valid")
    return _per_example_mean(ops.square(a - b))


def grid_window(size: int, scale: int, largest: int = 64) -> int:
    """The side of the windows ``grid_loss`` uses on ``size`` x ``size`` images: the largest
    multiple of ``scale`` up to ``largest`` that divides ``size`` (``size`` itself if none)."""
    for window in range(min(size, largest) // scale * scale, 0, -scale):
        if size % window == 0:
            return window
    return size


def grid_loss(images, targets, scale: int, window: int):
    """Squared size of the error that repeats with the low-res pixel grid, per example (pixel
    levels squared): in each ``window`` x ``window`` block, the error (y^ - y) averaged over
    each of the ``scale`` x ``scale`` sub-pixel phases, less the block's mean, squared and
    averaged over phases, blocks and channels. A lattice tied to the network's upsampling grid
    raises it; detail that does not care where the low-res pixels fall does not (the training
    counterpart of ``evaluation.metrics.grid_pattern``). Height and width must be multiples of
    ``window``, and ``window`` of ``scale``."""
    error = ops.cast(images, "float32") - ops.cast(targets, "float32")
    _, height, width, channels = error.shape
    n, m, k = height // window, width // window, window // scale
    blocks = ops.reshape(error, (-1, n, k, scale, m, k, scale, channels))
    phases = ops.mean(blocks, axis=(2, 5))  # (B, n, scale, m, scale, C)
    phases = phases - ops.mean(phases, axis=(2, 4), keepdims=True)
    return ops.mean(ops.square(phases), axis=(1, 2, 3, 4, 5))


def stability_loss(shifted_output, output, offset, border: int = STABILITY_BORDER):
    """A training-time temporal stability term (not part of the paper's objective): per-example
    mean squared difference, in pixel levels, between the network's output for a window of its
    input whose top-left corner is at ``offset`` = (dy, dx) (perhaps with sensor noise added),
    and its output for the whole input at the same place; over the window's pixels less
    ``border`` at its edges. (B,). A network whose output moves with the scene scores 0: what
    a camera pan over a still scene asks of it (``metrics.flicker``). ``offset`` may hold
    tensors (a shift drawn each step); the window's size is ``shifted_output``'s."""
    shape = ops.shape(shifted_output)
    height, width = shape[1] - 2 * border, shape[2] - 2 * border
    ours = shifted_output[:, border:border + height, border:border + width]
    theirs = ops.slice(output, [0, offset[0] + border, offset[1] + border, 0],
                       [shape[0], height, width, shape[3]])
    return ops.mean(ops.square(ops.cast(ours, "float32") - ops.cast(theirs, "float32")),
                    axis=(1, 2, 3))


