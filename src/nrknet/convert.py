"""``nrknet-convert``: turn a checkpoint of the reference implementation (BGR) into an RGB nrknet
checkpoint (the conversion itself: :mod:`nrknet.weights.reference`)."""

from __future__ import annotations

import argparse
import sys

from nrknet.cli import reported
from nrknet.weights.reference import convert_file


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="nrknet-convert",
        description="Convert a checkpoint of the reference NRKNet implementation (BGR) into an RGB nrknet checkpoint.",
    )
    parser.add_argument("input", help="reference checkpoint (.pth)")
    parser.add_argument("output", help="nrknet checkpoint to write (.ckpt)")
    parser.add_argument("--overwrite", action="store_true", help="replace an existing output")
    parser.add_argument("--debug", action="store_true", help="show the full traceback on errors")
    return run(parser.parse_args(argv))


@reported("nrknet-convert", debug=lambda args: args.debug)
def run(args: argparse.Namespace) -> int:
    model = convert_file(args.input, args.output, overwrite=args.overwrite)
    width = model.config["width"]
    print(
        f"wrote {args.output}: NRKNet width {width}, {model.config['num_levels']} atom levels, RGB input"
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
