"""The layers the benchmark runs: real networks' convolutions, named and grouped in suites.

A :class:`Layer` is a convolution as ``torch.nn.Conv2d`` arguments plus an input
size; the harness builds its :class:`~convlab.shapes.ConvSpec` for the run's batch.
The suites follow DeepBench-style choices: the seed tutorial's toy layer, ResNet's
and VGG's 3x3 layers, a 7x7 stride-2 stem, 1x1 downsample and pointwise layers,
MobileNet's depthwise layers and dilated (DeepLab-style) layers; and one sweep, ``kernels``:
a ResNet-sized layer with the kernel growing from 3x3 to 15x15 (the algorithm crossover).
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from typing import Any

from ..errors import UsageError
from ..shapes import ConvSpec, IntOrPair, PaddingArg

DEFAULT_BATCH = 8


@dataclass(frozen=True)
class Layer:
    """One named convolution layer, as ``torch.nn.Conv2d`` arguments plus an input size."""

    name: str
    in_channels: int
    size: tuple[int, int]  # input height, width
    out_channels: int
    kernel_size: IntOrPair
    stride: IntOrPair = 1
    padding: PaddingArg = 0
    dilation: IntOrPair = 1
    groups: int = 1
    batch: int | None = None  # None: the run's batch (DEFAULT_BATCH unless overridden)
    note: str = ""

    def spec(self, batch: int) -> ConvSpec:
        return ConvSpec.create((batch, self.in_channels) + tuple(self.size), self.out_channels,
                               self.kernel_size, self.stride, self.padding, self.dilation,
                               self.groups)  # fmt: skip

    def describe(self) -> str:
        """Short human label: '3x3 64->64 @56x56 s1 p1'."""
        s = self.spec(1)
        kh, kw = s.kernel_size
        txt = f"{kh}x{kw} {s.in_channels}->{s.out_channels} @{s.height}x{s.width}"
        if s.stride != (1, 1):
            txt += f" s{s.stride[0]}" if s.stride[0] == s.stride[1] else f" s{s.stride}"
        if s.dilation != (1, 1):
            txt += f" d{s.dilation[0]}" if s.dilation[0] == s.dilation[1] else f" d{s.dilation}"
        if s.groups != 1:
            txt += " depthwise" if s.groups == s.in_channels else f" g{s.groups}"
        return txt


def _res(name: str, c: int, hw: int, **kw: Any) -> Layer:
    return Layer(name, c, (hw, hw), c, 3, padding=1, **kw)


SEED = Layer("seed", 5, (10, 12), 2, 3, batch=64, note="the seed's example: N=64, 5->2, 3x3")
RESNET = (
    _res("res_64x56", 64, 56, note="ResNet conv2_x 3x3"),
    _res("res_128x28", 128, 28, note="ResNet conv3_x 3x3"),
    _res("res_256x14", 256, 14, note="ResNet conv4_x 3x3"),
    _res("res_512x7", 512, 7, note="ResNet conv5_x 3x3"),
    Layer("res_stem", 3, (224, 224), 64, 7, stride=2, padding=3, note="ResNet conv1 7x7/2"),
    Layer("res_down", 64, (56, 56), 128, 1, stride=2, note="ResNet-18 1x1/2 downsample"),
)
VGG = (
    Layer("vgg_conv1_1", 3, (224, 224), 64, 3, padding=1, note="VGG-16 conv1_1"),
    Layer("vgg_conv2_1", 64, (112, 112), 128, 3, padding=1, note="VGG-16 conv2_1"),
    Layer("vgg_conv3_2", 256, (56, 56), 256, 3, padding=1, note="VGG-16 conv3_2"),
    Layer("vgg_conv4_2", 512, (28, 28), 512, 3, padding=1, note="VGG-16 conv4_2"),
    Layer("vgg_conv5_2", 512, (14, 14), 512, 3, padding=1, note="VGG-16 conv5_2"),
)
MOBILENET = (
    Layer("mb_dw_32x112", 32, (112, 112), 32, 3, padding=1, groups=32,
          note="MobileNet-v1 depthwise 3x3"),
    Layer("mb_dw_64x112s2", 64, (112, 112), 64, 3, stride=2, padding=1, groups=64,
          note="MobileNet-v1 depthwise 3x3/2"),
    Layer("mb_pw_32to64x112", 32, (112, 112), 64, 1, note="MobileNet-v1 pointwise 1x1"),
    Layer("mb_pw_512x14", 512, (14, 14), 512, 1, note="MobileNet-v1 pointwise 1x1"),
)
DILATED = (
    Layer("dil2_64x56", 64, (56, 56), 64, 3, padding=2, dilation=2,
          note="dilated 3x3 (DeepLab-style), dilation 2"),
    Layer("dil2_256x14", 256, (14, 14), 256, 3, padding=2, dilation=2,
          note="dilated 3x3, dilation 2"),
)


# 3x3 stride-1 layers across channels and image sizes, batch 1 and (for the small images,
# where tiles are few) batch 8: the measurements behind Winograd's place in the auto rule
# (kernels/winograd.py: AUTO_MIN_CHANNELS, AUTO_MIN_TILES_F4).
SWEEP_3X3 = tuple(
    Layer(f"sweep_{c}x{hw}_n{n}", c, (hw, hw), c, 3, padding=1, batch=n,
          note=f"3x3 {c}->{c} at {hw}x{hw}, batch {n}")
    for n, sizes in ((1, (7, 14, 28, 56)), (8, (7, 14)))
    for hw in sizes
    for c in (8, 16, 32, 64, 128, 256)
)


# The algorithm crossover: one layer, the kernel growing.  Direct convolution's work grows
# with k^2, FFT convolution's hardly at all (its transforms and products depend on the
# tile, not on the taps), Winograd only exists for 3x3: which kernel wins at which k?
KERNEL_SIZES = (3, 5, 7, 9, 11, 13, 15)
KERNELS = tuple(
    Layer(f"k{k}_64x56", 64, (56, 56), 64, k, padding="same",
          note=f"{k}x{k} 64->64 @56x56 'same': the kernel-size sweep")
    for k in KERNEL_SIZES
)


def _unique(layers: Iterable[Layer]) -> tuple[Layer, ...]:
    seen: dict[str, Layer] = {}
    for layer in layers:
        seen.setdefault(layer.name, layer)
    return tuple(seen.values())


SUITES: dict[str, tuple[Layer, ...]] = {
    "seed": (SEED,),
    "resnet": RESNET,
    "vgg": VGG,
    "mobilenet": MOBILENET,
    "dilated": DILATED,
    # ~1 minute on 2 cores for the default kernels: one layer of each kind
    "quick": (SEED, RESNET[2], MOBILENET[0], MOBILENET[2], DILATED[1]),
    "all": _unique((SEED,) + RESNET + VGG + MOBILENET + DILATED),
}

# Sweeps: one layer with one thing growing, for the crossover plots (plots.crossover_plot).
# Kept out of SUITES and "all" (real networks' layers, which the figures plot per layer).
SWEEPS: dict[str, tuple[Layer, ...]] = {"kernels": KERNELS, "sweep3x3": SWEEP_3X3}


# Toy layers for the CUDA simulator (a few hundred outputs: ~1 s per call there), each with
# a ragged edge for the tiles; stride, depthwise groups, dilation and asymmetric 'same'
# padding.  Kept out of SUITES and "all" (real networks' layers, which the figures plot).
TOY_SUITES: dict[str, tuple[Layer, ...]] = {
    "tiny": (
        Layer("tiny_3x3", 3, (6, 7), 4, 3, padding=1, batch=2, note="toy: 3x3, ragged tiles"),
        Layer("tiny_dw_s2", 4, (9, 7), 4, 3, stride=2, padding=1, groups=4, batch=2,
              note="toy: depthwise 3x3/2"),
        Layer("tiny_dil_same", 3, (5, 9), 5, (2, 3), padding="same", dilation=(1, 2), batch=1,
              note="toy: dilated 2x3, asymmetric 'same' padding"),
    ),
}


def suite_names() -> list[str]:
    """Every suite ``suite_layers`` (and ``convlab bench --suite``) knows."""
    return [*SUITES, *SWEEPS, *TOY_SUITES]


def suite_layers(suite: str, only: Sequence[str] | None = None) -> tuple[Layer, ...]:
    """The layers of ``suite`` (optionally only those named in ``only``)."""
    known = {**SUITES, **SWEEPS, **TOY_SUITES}
    if suite not in known:
        raise UsageError(f"unknown suite {suite!r}; suites: {', '.join(suite_names())}")
    layers = known[suite]
    if only:
        by_name = {layer.name: layer for group in (SUITES, SWEEPS, TOY_SUITES)
                   for suite_ in group.values() for layer in suite_}
        unknown = [n for n in only if n not in by_name]
        if unknown:
            raise UsageError(f"unknown layer {unknown[0]!r}; layers: {', '.join(by_name)}")
        layers = tuple(by_name[n] for n in only)
    return layers
