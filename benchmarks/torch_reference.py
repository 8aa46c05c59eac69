"""PyTorch reference: the training step of benchmarks/train_speed.py, written plainly in PyTorch.

    python benchmarks/torch_reference.py [--steps=5] [--image_size=256] [--write]

A straightforward float32 CPU implementation (no channels_last, torch.compile or bf16) of the same
style transformation network, VGG16 loss network (the same torchvision weights, read from the
Keras weights file kperceptual caches) and loss, so both numbers can be measured on one machine.
With --write it puts its table into docs/benchmarks.md (section "PyTorch reference").
Needs `pip install torch` (CPU wheel).
"""

from __future__ import annotations

import os
import re
import sys
import time

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

import h5py  # noqa: E402
import numpy as np  # noqa: E402
import torch  # noqa: E402
from absl import app, flags  # noqa: E402
from torch import nn  # noqa: E402

from benchmarks import report  # noqa: E402
from kperceptual.imaging import images  # noqa: E402
from kperceptual.losses import vgg16_weights as weights

FLAGS = flags.FLAGS


def define_flags():
    """This script's flags (not defined on import: benchmarks/inference.py imports the network)."""
    flags.DEFINE_integer("steps", 5, "Timed training steps (after 2 warm-up steps).")
    flags.DEFINE_integer("image_size", 256, "Content image size (a multiple of 4); 256 for the "
                                            "report.")
    flags.DEFINE_integer("batch_size", 4, "Content images per step.")
    flags.DEFINE_bool("write", False, "Write the result into docs/benchmarks.md.")

STYLE_LAYERS = ("relu1_2", "relu2_2", "relu3_3", "relu4_3")
CONTENT_LAYER = "relu2_2"
CONTENT_WEIGHT, STYLE_WEIGHT, TV_WEIGHT = 1.0, 1e5, 1e-8  # the training defaults


class ConvLayer(nn.Sequential):
    """Reflection padding + convolution ("same" size at stride 1)."""

    def __init__(self, cin, cout, kernel_size, stride=1):
        super().__init__(nn.ReflectionPad2d(kernel_size // 2),
                         nn.Conv2d(cin, cout, kernel_size, stride))


def conv_in_relu(cin, cout, kernel_size, stride=1):
    return nn.Sequential(ConvLayer(cin, cout, kernel_size, stride),
                         nn.InstanceNorm2d(cout, affine=True), nn.ReLU())


class ResidualBlock(nn.Module):
    def __init__(self, channels):
        super().__init__()
        self.body = nn.Sequential(conv_in_relu(channels, channels, 3),
                                  ConvLayer(channels, channels, 3),
                                  nn.InstanceNorm2d(channels, affine=True))

    def forward(self, x):
        return x + self.body(x)


class StyleTransferNetwork(nn.Module):
    """kperceptual.networks.transformation.StyleTransferNetwork defaults: instance norm, resize-conv, reflect."""

    def __init__(self):
        super().__init__()
        self.layers = nn.Sequential(
            conv_in_relu(3, 32, 9), conv_in_relu(32, 64, 3, 2), conv_in_relu(64, 128, 3, 2),
            *[ResidualBlock(128) for _ in range(5)],
            nn.Upsample(scale_factor=2, mode="nearest"), conv_in_relu(128, 64, 3),
            nn.Upsample(scale_factor=2, mode="nearest"), conv_in_relu(64, 32, 3),
            ConvLayer(32, 3, 9))

    def forward(self, pixels):  # (B, 3, H, W) in [0, 255], H and W multiples of 4
        return 127.5 * (torch.tanh(self.layers(pixels / 127.5 - 1.0)) + 1.0)


def read_vgg16_convs(path):
    """The 13 VGG16 (kernel OIHW, bias) pairs from a keras.applications.VGG16 .weights.h5 file."""
    with h5py.File(path, "r") as f:
        names = [n for n in f["layers"] if n.startswith("conv2d")]
        # Keras names them conv2d, conv2d_1, ..., conv2d_12: sort numerically, not as strings.
        names.sort(key=lambda n: int(re.sub(r"\D", "", n) or 0))
        convs = [(np.array(f["layers"][n]["vars"]["0"]), np.array(f["layers"][n]["vars"]["1"]))
                 for n in names]
    if len(convs) != 13:
        raise ValueError(f"{path}: expected 13 convolutions, found {len(convs)}")
    return [(np.ascontiguousarray(k.transpose(3, 2, 0, 1)), b) for k, b in convs]


class VGG16Features(nn.Module):
    """Frozen VGG16 up to relu4_3 with torchvision preprocessing; returns the four style layers."""

    BLOCKS = ((64, 64), (128, 128), (256, 256, 256), (512, 512, 512))

    def __init__(self, convs):
        super().__init__()
        self.blocks = nn.ModuleList()
        cin, i = 3, 0
        for widths in self.BLOCKS:
            block = [] if not self.blocks else [nn.MaxPool2d(2, 2)]
            for cout in widths:
                conv = nn.Conv2d(cin, cout, 3, padding=1)
                kernel, bias = convs[i]
                assert kernel.shape == tuple(conv.weight.shape), (i, kernel.shape)
                with torch.no_grad():
                    conv.weight.copy_(torch.from_numpy(kernel))
                    conv.bias.copy_(torch.from_numpy(bias))
                block += [conv, nn.ReLU()]
                cin, i = cout, i + 1
            self.blocks.append(nn.Sequential(*block))
        self.register_buffer("mean", torch.tensor([0.485, 0.456, 0.406]).view(1, 3, 1, 1))
        self.register_buffer("std", torch.tensor([0.229, 0.224, 0.225]).view(1, 3, 1, 1))
        self.requires_grad_(False)
        self.eval()

    def forward(self, pixels):  # (B, 3, H, W) in [0, 255]
        x = (pixels / 255.0 - self.mean) / self.std
        features = {}
        for name, block in zip(STYLE_LAYERS, self.blocks):
            x = block(x)
            features[name] = x
        return features


def gram(features):
    b, c, h, w = features.shape
    flat = features.reshape(b, c, h * w)
    return flat @ flat.transpose(1, 2) / (c * h * w)


def total_loss(vgg, outputs, content_features, style_grams):
    features = vgg(outputs)
    content = ((features[CONTENT_LAYER] - content_features) ** 2).mean(dim=(1, 2, 3))
    style = sum(((gram(features[l]) - style_grams[l]) ** 2).mean(dim=(1, 2)) for l in STYLE_LAYERS)
    tv = (((outputs[:, :, 1:, :] - outputs[:, :, :-1, :]) ** 2).sum(dim=(1, 2, 3))
          + ((outputs[:, :, :, 1:] - outputs[:, :, :, :-1]) ** 2).sum(dim=(1, 2, 3)))
    return (CONTENT_WEIGHT * content + STYLE_WEIGHT * style + TV_WEIGHT * tv).mean()


def to_nchw(array):
    return torch.from_numpy(np.asarray(array, np.float32)).permute(0, 3, 1, 2).contiguous()


def seconds_per_step(size, batch_size, steps):
    torch.manual_seed(0)
    vgg = VGG16Features(read_vgg16_convs(weights.fetch_torchvision_weights()))
    style = images.resize_long_side(images.read_image("skimage:hubble_deep_field"), 256)
    with torch.no_grad():
        style_grams = {l: gram(f) for l, f in vgg(to_nchw(style[None])).items()}
    net = StyleTransferNetwork()
    optimizer = torch.optim.Adam(net.parameters(), lr=1e-3)
    content = to_nchw(np.stack([np.random.default_rng(i).integers(0, 256, (size, size, 3), np.uint8)
                                for i in range(batch_size)]))
    times = []
    for _ in range(steps + 2):
        start = time.perf_counter()
        optimizer.zero_grad()
        outputs = net(content)
        with torch.no_grad():
            content_features = vgg(content)[CONTENT_LAYER]
        loss = total_loss(vgg, outputs, content_features, style_grams)
        loss.backward()
        optimizer.step()
        times.append(time.perf_counter() - start)
    if not torch.isfinite(loss):
        raise RuntimeError(f"loss is {loss.item()}")
    return float(np.median(times[2:])), loss.item()


def main(argv):
    del argv
    if FLAGS.image_size % 4:
        sys.exit("torch_reference: --image_size must be a multiple of 4")
    torch.set_num_threads(os.cpu_count())
    size, batch = FLAGS.image_size, FLAGS.batch_size
    s, loss = seconds_per_step(size, batch, FLAGS.steps)
    row = (f"| training step, float32, {size}x{size}, batch {batch} | {s:.2f} s/step | "
           f"{batch / s:.2f} images/s | PyTorch {torch.__version__} |")
    print(row)
    print(f"final loss {loss:.4g}, {torch.get_num_threads()} threads")
    if FLAGS.write:
        body = "\n".join([
            "A straightforward PyTorch (CPU, float32) implementation of the same network, VGG16 "
            "loss network and weights, loss and Adam step as \"Training speed\" above "
            f"(`benchmarks/torch_reference.py`); median of {FLAGS.steps} steps after 2 warm-up "
            "steps.",
            "",
            "| what | time | throughput | framework |",
            "|---|---|---|---|",
            row,
        ])
        report.write_section("PyTorch reference", body, sys.argv)


if __name__ == "__main__":
    define_flags()
    app.run(main)
