"""Regenerate the golden fixtures: PyTorch's own outputs, committed as .npz.

Run with torch 2.13 installed:  python tests/golden/make_golden.py
Each case stores the input, weight, bias, the arguments and torch's output
(float64 computed by torch.nn.Conv2d with the same weight), so the test-suite
proves PyTorch equality even where torch is not installed.
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import torch

HERE = Path(__file__).parent

# name: (input shape, Conv2d kwargs)
CASES = {
    "seed_unbatched": ((5, 10, 12), dict(in_channels=5, out_channels=2, kernel_size=3)),
    "stride_pad": ((2, 3, 11, 9), dict(in_channels=3, out_channels=4, kernel_size=(3, 2),
                                       stride=(2, 3), padding=(1, 2))),
    "same_even_dilated": ((2, 3, 9, 8), dict(in_channels=3, out_channels=2, kernel_size=(4, 2),
                                             padding="same", dilation=(2, 3))),
    "valid_rect": ((1, 2, 7, 10), dict(in_channels=2, out_channels=3, kernel_size=(2, 5),
                                       padding="valid", bias=False)),
    "groups": ((2, 6, 8, 7), dict(in_channels=6, out_channels=4, kernel_size=3, groups=2,
                                  padding=1, stride=(1, 2))),
    "depthwise": ((2, 4, 9, 6), dict(in_channels=4, out_channels=8, kernel_size=3, groups=4,
                                     dilation=2, padding=2)),
    "reflect": ((2, 3, 7, 6), dict(in_channels=3, out_channels=2, kernel_size=3, padding=(2, 1),
                                   padding_mode="reflect")),
    "replicate_same": ((1, 3, 6, 9), dict(in_channels=3, out_channels=5, kernel_size=(2, 4),
                                          padding="same", padding_mode="replicate")),
    "circular": ((2, 2, 5, 7), dict(in_channels=2, out_channels=3, kernel_size=(3, 5),
                                    padding=(1, 3), stride=2, padding_mode="circular")),
    "circular_same_unbatched": ((4, 6, 5), dict(in_channels=4, out_channels=2, kernel_size=4,
                                                padding="same", padding_mode="circular")),
}


def main() -> None:
    torch.manual_seed(0)
    rng = np.random.default_rng(2026)
    for name, (shape, kwargs) in CASES.items():
        layer = torch.nn.Conv2d(**kwargs, dtype=torch.float64)
        x = rng.standard_normal(shape)
        with torch.no_grad():
            out = layer(torch.from_numpy(x)).numpy()
        args = {k: v for k, v in kwargs.items() if k not in ("in_channels", "out_channels",
                                                                "kernel_size", "bias")}
        np.savez_compressed(
            HERE / f"{name}.npz", x=x, weight=layer.weight.detach().numpy(),
            bias=(layer.bias.detach().numpy() if layer.bias is not None else np.zeros(0)),
            has_bias=layer.bias is not None, out=out, repr=repr(layer),
            args=json.dumps(args), module_args=json.dumps(kwargs),
            torch_version=torch.__version__,
        )
        print(f"{name}: {shape} -> {out.shape}  {layer}")


if __name__ == "__main__":
    main()
