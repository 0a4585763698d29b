"""Whole networks' convolutions, in order: ResNet-18, MobileNetV2 and VGG-16 as conv stacks.

The layer suites (:mod:`convlab.bench.suites`) time one convolution at a time.  A network
runs many in a row, each one's output (after a ReLU) the next one's input, and that is
what a user's model does.  This module writes each network down from its paper as a list
of :class:`Node`: a :class:`~convlab.bench.suites.Layer` (``torch.nn.Conv2d``'s
arguments plus its input size) and where its input comes from.

What is kept and what is not: every convolution, with the paper's channels, kernel
sizes, strides and padding, in the order a forward pass runs them; a ReLU after each.
The rest of the network is left out or replaced by the cheapest thing with the same
shapes, the same on both sides of the comparison:

* pooling (ResNet's 3x3/2 max-pool after the stem, VGG's 2x2 max-pools) becomes a 2x
  subsample (``x[:, :, ::2, ::2]``): the next convolution sees the paper's size;
* residual additions are left out: the convolution after a block reads the block's last
  convolution; ResNet's 1x1 stride-2 shortcut reads the block's input, as in the paper;
* MobileNetV2's ReLU6 is a ReLU and its linear bottleneck (no activation after the
  projection) gets one too; batch norm (folded into the weights at inference), the
  classifier and the global pooling are left out.

Sources: He et al. 2016, "Deep Residual Learning" (arXiv 1512.03385), Table 1;
Sandler et al. 2018, "MobileNetV2" (arXiv 1801.04381), Table 2; Simonyan & Zisserman
2015, "Very Deep Convolutional Networks" (arXiv 1409.1556), Table 1, configuration D.

``scale`` shrinks a network for tests and CI (``convlab bench --model all --quick``):
the channels are divided by it (never below 1), the structure and the strides stay.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

from .suites import Layer

INPUT = -1  # Node.source: the network's input image


@dataclass(frozen=True)
class Node:
    """One convolution of a network: its layer and where its input comes from.

    ``source``: the index of the node whose (ReLU'd) output this layer reads, or
    :data:`INPUT`; ``subsample``: that output is subsampled 2x first (the pooling)."""

    layer: Layer
    source: int
    subsample: bool = False


@dataclass(frozen=True)
class Network:
    """A network's conv stack: ``nodes`` in the order a forward pass runs them."""

    name: str
    nodes: tuple[Node, ...]
    batch: int  # the paper-style benchmark batch (the targets)
    note: str

    @property
    def input_shape(self) -> tuple[int, int, int]:
        first = self.nodes[0].layer
        return (first.in_channels, *first.size)


class _Builder:
    """Appends nodes, tracking each output's shape so the next layer's input size follows."""

    def __init__(self, name: str, channels: int, size: int, scale: int) -> None:
        self.name, self.scale = name, scale
        self.nodes: list[Node] = []
        self.shapes: dict[int, tuple[int, int]] = {INPUT: (channels, size)}
        self.last = INPUT

    def ch(self, channels: int) -> int:
        return max(1, channels // self.scale)

    def conv(self, label: str, out: int, k: int, stride: int = 1, *, source: int | None = None,
             depthwise: bool = False, subsample: bool = False, scaled: bool = False) -> int:
        """Add a convolution reading ``source`` (default: the last node); returns its index.
        ``scaled``: ``out`` is already divided by the scale."""
        src = self.last if source is None else source
        c, hw = self.shapes[src]
        if subsample:
            hw = (hw + 1) // 2
        k_out = c if depthwise else (out if scaled else self.ch(out))
        index = len(self.nodes)
        layer = Layer(f"{self.name}.{index:02d}.{label}", c, (hw, hw), k_out, k, stride=stride,
                      padding=k // 2, groups=c if depthwise else 1)
        self.nodes.append(Node(layer, src, subsample))
        spec = layer.spec(1)
        self.shapes[index] = (k_out, spec.out_height)
        self.last = index
        return index


def resnet18(size: int = 224, scale: int = 1) -> Network:
    """ResNet-18's 20 convolutions (He et al. 2016, Table 1): the 7x7/2 stem, four stages
    of two basic blocks (two 3x3 each), a 1x1/2 shortcut where a stage halves the size."""
    b = _Builder("resnet18", 3, size, scale)
    b.conv("conv1", 64, 7, 2)
    first = True
    for stage, width in enumerate((64, 128, 256, 512), start=2):
        for block in (1, 2):
            stride = 2 if stage > 2 and block == 1 else 1
            block_input = b.last
            b.conv(f"conv{stage}_{block}a", width, 3, stride, subsample=first)
            b.conv(f"conv{stage}_{block}b", width, 3)
            if stride == 2:
                main = b.last
                b.conv(f"down{stage}", width, 1, 2, source=block_input)
                b.last = main  # the next block reads the main path (the add is left out)
            first = False
    return Network("resnet18", tuple(b.nodes), 8, "He et al. 2016, Table 1 (conv layers)")


# MobileNetV2's bottleneck stages (Sandler et al. 2018, Table 2): expansion t, output
# channels c, repeats n, first stride s.
MOBILENET_V2_STAGES = ((1, 16, 1, 1), (6, 24, 2, 2), (6, 32, 3, 2), (6, 64, 4, 2),
                       (6, 96, 3, 1), (6, 160, 3, 2), (6, 320, 1, 1))


def mobilenet_v2(size: int = 224, scale: int = 1) -> Network:
    """MobileNetV2's 52 convolutions: a 3x3/2 stem, 17 inverted residual blocks (1x1
    expand unless t=1, 3x3 depthwise, 1x1 project), a last 1x1 to 1280 channels."""
    b = _Builder("mobilenet_v2", 3, size, scale)
    b.conv("stem", 32, 3, 2)
    block = 0
    for t, c, n, s in MOBILENET_V2_STAGES:
        for i in range(n):
            block += 1
            cin = b.shapes[b.last][0]
            if t != 1:
                b.conv(f"b{block}_expand", cin * t, 1, scaled=True)
            b.conv(f"b{block}_dw", 0, 3, s if i == 0 else 1, depthwise=True)
            b.conv(f"b{block}_project", c, 1)
    b.conv("conv_last", 1280, 1)
    return Network("mobilenet_v2", tuple(b.nodes), 8, "Sandler et al. 2018, Table 2")


# VGG-16 (configuration D): channels per 3x3 layer, "M" for a 2x2 max-pool.
VGG16_CONFIG = (64, 64, "M", 128, 128, "M", 256, 256, 256, "M", 512, 512, 512, "M",
                512, 512, 512)


def vgg16(size: int = 224, scale: int = 1) -> Network:
    """VGG-16's 13 convolutions (configuration D), all 3x3 stride 1 padding 1."""
    b = _Builder("vgg16", 3, size, scale)
    pool, stage, index = False, 1, 0
    for item in VGG16_CONFIG:
        if item == "M":
            pool, stage, index = True, stage + 1, 0
            continue
        index += 1
        b.conv(f"conv{stage}_{index}", int(item), 3, subsample=pool)
        pool = False
    return Network("vgg16", tuple(b.nodes), 1, "Simonyan & Zisserman 2015, config D")


MODELS: dict[str, Callable[..., Network]] = {
    "resnet18": resnet18, "mobilenet_v2": mobilenet_v2, "vgg16": vgg16}

# --quick: tests and CI: 32x32 images, an eighth of the channels, batch 2
QUICK_SIZE, QUICK_SCALE, QUICK_BATCH = 32, 8, 2


def model_names(names: str) -> list[str]:
    """``convlab bench --model``'s value as model names ("all": every one)."""
    wanted = [n.strip() for n in names.split(",") if n.strip()]
    if wanted == ["all"]:
        return list(MODELS)
    unknown = [n for n in wanted if n not in MODELS]
    if unknown or not wanted:
        raise ValueError(f"unknown model {(unknown or [names])[0]!r}; models: "
                         f"{', '.join(MODELS)}, all")
    return wanted


def build(name: str, quick: bool = False) -> Network:
    """The network ``name`` at the paper's size, or tiny (``quick``)."""
    if quick:
        net = MODELS[name](QUICK_SIZE, QUICK_SCALE)
        return Network(net.name, net.nodes, QUICK_BATCH, net.note + " (quick: tiny sizes)")
    return MODELS[name]()
