"""The ``convlab`` command.

    convlab shape --input 64,5,10,12 --out-channels 2 --kernel-size 3 --padding same
    convlab info

Bad arguments print one line saying what was wrong and exit with status 2.
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Sequence

from .shapes import ConvSpec


class _Parser(argparse.ArgumentParser):
    """argparse, but a usage error is one line (plus a pointer to --help), exit 2."""

    def error(self, message: str) -> None:  # type: ignore[override]
        self.exit(2, f"{self.prog}: error: {message} (see {self.prog} --help)\n")


def _ints(text: str) -> tuple[int, ...]:
    try:
        values = tuple(int(v) for v in text.replace("x", ",").split(",") if v.strip())
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected integers like 3 or 3,5; got {text!r}") from None
    if not values:
        raise argparse.ArgumentTypeError(f"expected integers like 3 or 3,5; got {text!r}")
    return values


def _int_or_pair(text: str) -> int | tuple[int, ...]:
    values = _ints(text)
    return values[0] if len(values) == 1 else values


def _padding(text: str) -> int | str | tuple[int, ...]:
    try:
        return _int_or_pair(text)
    except argparse.ArgumentTypeError:
        return text  # 'same', 'valid', or a bad string ConvSpec will name


def _cmd_shape(args: argparse.Namespace) -> int:
    spec = ConvSpec.create(args.input, args.out_channels, args.kernel_size, args.stride,
                           args.padding, args.dilation, args.groups, args.padding_mode)
    top, bottom, left, right = spec.padding
    bias = not args.no_bias
    print(f"input            {spec.input_shape}")
    print(f"output           {spec.output_shape}")
    print(f"padding applied  top={top} bottom={bottom} left={left} right={right}"
          + (f"  ({spec.padding_mode})" if spec.padding_mode != "zeros" else ""))
    print(f"weight           {spec.weight_shape}   (out, in/groups, kh, kw)")
    print(f"bias             {spec.bias_shape if bias else None}")
    print(f"parameters       {spec.parameter_count(bias):,}")
    print(f"FLOPs            {spec.flops():,}   (2 x multiply-adds, bias not counted)")
    print(f"MACs per output  {spec.reduction_length:,}   (C/groups x kh x kw)")
    return 0


def _cmd_info(args: argparse.Namespace) -> int:
    from . import kernels
    from .system import describe

    info = describe()
    print(f"convlab {info['versions']['convlab']}  python {info['python']}  "
          f"({info['platform']})")
    print(f"cpu              {info['cpu']}, {info['cores']} cores")
    print(f"numba threads    {info['numba_threads']} (threading layer: "
          f"{info['threading_layer']})")
    print("versions         " + ", ".join(f"{k} {v}" for k, v in info["versions"].items()
                                         if v and k != "convlab"))
    missing = [k for k, v in info["versions"].items() if not v]
    if missing:
        print(f"not installed    {', '.join(missing)}")
    print(f"cuda             {info['cuda']}")
    print("kernels:")
    for name, kern in kernels.KERNELS.items():
        why = kern.available()
        state = "available" if why is None else f"unavailable: {why}"
        print(f"  {name:<13} {kern.device:<5} {kern.description}  [{state}]")
    return 0


def build_parser() -> argparse.ArgumentParser:
    parser = _Parser(prog="convlab", description="convlab: a 2-D convolution kernel lab")
    sub = parser.add_subparsers(dest="command", required=True, parser_class=_Parser)

    shape = sub.add_parser("shape", help="output shape, padding, parameters and FLOPs of a "
                                         "convolution")
    shape.add_argument("--input", required=True, type=_ints, metavar="N,C,H,W",
                       help="input shape: N,C,H,W (batched) or C,H,W (unbatched)")
    shape.add_argument("--out-channels", required=True, type=int)
    shape.add_argument("--kernel-size", required=True, type=_int_or_pair, metavar="K|KH,KW")
    shape.add_argument("--stride", default=1, type=_int_or_pair, metavar="S|SH,SW")
    shape.add_argument("--padding", default=0, type=_padding, metavar="P|PH,PW|same|valid")
    shape.add_argument("--dilation", default=1, type=_int_or_pair, metavar="D|DH,DW")
    shape.add_argument("--groups", default=1, type=int)
    shape.add_argument("--padding-mode", default="zeros",
                       choices=["zeros", "reflect", "replicate", "circular"])
    shape.add_argument("--no-bias", action="store_true", help="a layer without bias")
    shape.set_defaults(func=_cmd_shape)

    info = sub.add_parser("info", help="versions, CPU, threads and which kernels run here")
    info.set_defaults(func=_cmd_info)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    try:
        return args.func(args)
    except (ValueError, TypeError) as exc:
        # convlab's own validation errors: one line, the usage-error status
        print(f"convlab {args.command}: error: {exc}", file=sys.stderr)
        return 2


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
