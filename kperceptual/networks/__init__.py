"""The image transformation networks of the paper and their layers. Backend-neutral: ``keras.layers``/``keras.ops``.

The style transformation network of Johnson et al. (2016), supplementary Table 1:

    9x9 conv 32, stride 1 -> 3x3 conv 64, stride 2 -> 3x3 conv 128, stride 2
    -> 5 residual blocks (two 3x3 convs, 128 filters)
    -> two stride-1/2 convs, 64 and 32 filters -> 9x9 conv 3 -> scaled tanh, pixels in [0, 255]

with normalisation + ReLU after every conv but the last; and the super-resolution network of
the same paper (supplementary Table 2): a 9x9 conv with 64 filters and 4 residual blocks at the
low resolution, then log2(f) stride-1/2 convs (2 for x4, 3 for x8) and a 9x9 conv out, pixels in
[0, 255]. Configurable the ways the peers changed
it since: instance normalisation (Ulyanov et al. 2016) instead of batch normalisation,
nearest-neighbour resize + conv instead of transposed convolution (no checkerboard artefacts,
Odena et al. 2016), and reflection instead of zero padding. Any input size works; inputs whose
sides are not a multiple of 4 are reflection-padded and the output cropped back, so the output
always has the input's size.

One network for N styles (Dumoulin, Shlens and Kudlur, *A Learned Representation for Artistic
Style*, ICLR 2017): ``StyleTransferNetwork(num_styles=N)`` shares every convolution and gives
each style its own scale and shift at every normalisation layer
(``ConditionalInstanceNormalization``); it takes the pixels and the style weights (B, N), one-hot
for one style, a convex mix to interpolate styles. ``bind_style`` turns it into the one-style
network of that mix (N = 1 is the paper's network, unchanged), which everything that applies,
tiles or exports a one-input network takes as it is.

* ``layers``: padding, upsampling, conditional instance normalisation, blocks, output heads;
* ``style_transfer``: ``StyleTransferNetwork`` (Table 1; N styles);
* ``super_resolution``: ``SuperResolutionNetwork`` (Table 2);
* ``styles``: style names and weights, ``bind_style``, ``with_precision``;
* ``fast_forward``: ``training_forward``, a network's forward pass as training steps compute it (faster);
* ``precision``: Keras dtype policies and whether the CPU computes bfloat16 natively.

Importing the package registers every class with Keras (``.keras`` files name them
``kperceptual>ClassName``), and gives all of them as ``kperceptual.networks.<name>``.
"""

from kperceptual.networks.layers import (  # noqa: F401
    ReflectionPadding2D, PadToMultiple, NearestUpsampling2D, CropToReference, bicubic_weights,
    BicubicUpsampling2D, ConditionalInstanceNormalization, conv_norm_relu, residual_block,
    upsample_norm_relu, pixels_from_logits, ClipPixels, pixels_from_linear,
    pixels_from_residual)
from kperceptual.networks.style_transfer import (BORDER_MARGIN, StyleTransferNetwork,  # noqa: F401
                                                 border_margin)
from kperceptual.networks.super_resolution import SuperResolutionNetwork  # noqa: F401
from kperceptual.networks.fast_forward import training_forward  # noqa: F401
from kperceptual.networks.styles import (bind_style, num_styles, style_names,  # noqa: F401
                                         style_weights, with_precision)
