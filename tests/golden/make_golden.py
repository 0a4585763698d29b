"""Regenerate the golden fixtures: PyTorch's own outputs, committed as .npz.

Run with torch 2.13 installed:  python tests/golden/make_golden.py [forward|backward]
(both when no group is named).
Each case stores the input, weight, bias, the arguments and torch's output
(float64 computed by torch.nn.Conv2d with the same weight), so the test-suite
proves PyTorch equality even where torch is not installed.

The backward fixtures (``backward/``, read by tests/test_golden_backward.py) also store a
random grad_output and torch.autograd's gradients w.r.t. the input, weight and bias, for
Conv2d (stride 2, 'same' with even kernels, dilation, groups, depthwise, every
padding_mode, unbatched) and ConvTranspose2d (output_padding, also where it is only
below the dilation).
"""

from __future__ import annotations

import json
import sys
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


BACKWARD = HERE / "backward"

# name: (input shape, Conv2d kwargs)
GRAD_CASES = {
    "grad_stride2": ((2, 3, 9, 8), dict(in_channels=3, out_channels=4, kernel_size=3,
                                        stride=2, padding=1)),
    "grad_same_even": ((2, 3, 7, 8), dict(in_channels=3, out_channels=2, kernel_size=(4, 2),
                                          padding="same")),
    "grad_dilated": ((1, 2, 9, 10), dict(in_channels=2, out_channels=3, kernel_size=(3, 2),
                                         dilation=(2, 3), padding=(2, 1), stride=(1, 2))),
    "grad_groups": ((2, 6, 7, 7), dict(in_channels=6, out_channels=4, kernel_size=3,
                                       groups=2, padding=1, stride=(2, 1))),
    "grad_depthwise": ((2, 4, 8, 6), dict(in_channels=4, out_channels=8, kernel_size=3,
                                          groups=4, dilation=2, padding=2)),
    "grad_reflect": ((2, 3, 7, 6), dict(in_channels=3, out_channels=2, kernel_size=3,
                                        padding=(2, 1), padding_mode="reflect")),
    "grad_replicate_same": ((1, 3, 6, 9), dict(in_channels=3, out_channels=5,
                                               kernel_size=(2, 4), padding="same",
                                               padding_mode="replicate")),
    "grad_circular_stride": ((2, 2, 5, 7), dict(in_channels=2, out_channels=3,
                                                kernel_size=(3, 5), padding=(1, 3), stride=2,
                                                padding_mode="circular")),
    "grad_unbatched": ((3, 6, 7), dict(in_channels=3, out_channels=2, kernel_size=3, padding=1,
                                       stride=2, bias=False)),
}
# name: (input shape, ConvTranspose2d kwargs)
TRANSPOSED_CASES = {
    "transposed_outpad": ((2, 4, 5, 6), dict(in_channels=4, out_channels=6, kernel_size=(3, 2),
                                             stride=(2, 1), padding=(1, 0),
                                             output_padding=(1, 0), groups=2,
                                             dilation=(1, 2))),
    "transposed_outpad_dilation": ((1, 3, 4, 5), dict(in_channels=3, out_channels=2,
                                                      kernel_size=3, dilation=2,
                                                      output_padding=1)),
    "transposed_stride3_unbatched": ((3, 4, 4), dict(in_channels=3, out_channels=3,
                                                     kernel_size=3, stride=3, padding=1,
                                                     output_padding=2, bias=False)),
}


def make_backward() -> None:
    """torch.autograd's gradients for GRAD_CASES and TRANSPOSED_CASES."""
    torch.manual_seed(1)
    rng = np.random.default_rng(2027)
    BACKWARD.mkdir(exist_ok=True)
    for cases, module in ((GRAD_CASES, torch.nn.Conv2d),
                          (TRANSPOSED_CASES, torch.nn.ConvTranspose2d)):
        for name, (shape, kwargs) in cases.items():
            layer = module(**kwargs, dtype=torch.float64)
            x = torch.from_numpy(rng.standard_normal(shape)).requires_grad_(True)
            out = layer(x)
            grad_output = rng.standard_normal(tuple(out.shape))
            out.backward(torch.from_numpy(grad_output))
            has_bias = layer.bias is not None
            np.savez_compressed(
                BACKWARD / f"{name}.npz", x=x.detach().numpy(),
                weight=layer.weight.detach().numpy(),
                bias=layer.bias.detach().numpy() if has_bias else np.zeros(0),
                has_bias=has_bias, out=out.detach().numpy(), grad_output=grad_output,
                grad_input=x.grad.numpy(), grad_weight=layer.weight.grad.numpy(),
                grad_bias=layer.bias.grad.numpy() if has_bias else np.zeros(0),
                repr=repr(layer), module=module.__name__, module_args=json.dumps(kwargs),
                torch_version=torch.__version__,
            )
            print(f"{name}: {shape} -> {tuple(out.shape)}  {layer}")


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
    groups = sys.argv[1:] or ["forward", "backward"]
    if "forward" in groups:
        main()
    if "backward" in groups:
        make_backward()
