"""``nrknet-synth``: render a synthetic defocus set from the command line."""

from __future__ import annotations

import argparse
import sys
import time
from collections.abc import Sequence
from pathlib import Path

from nrknet.cli import reported
from nrknet.data.synthetic.render import SynthSettings
from nrknet.data.synthetic.writer import generate_dataset, is_complete_dataset
from nrknet.errors import UsageError
from nrknet.utils.checks import number


class _Parser(argparse.ArgumentParser):
    def error(self, message: str) -> None:  # type: ignore[override]
        raise UsageError(f"{message} (see --help)")


def _build_parser() -> argparse.ArgumentParser:
    p = _Parser(
        prog="nrknet-synth",
        description="Render a synthetic defocus-deblurring set in DPDD layout "
        "(train_c/val_c/test_c with source=blurry, target=sharp, depth) plus meta.json.",
    )
    p.add_argument("--out", required=True, type=Path, help="output folder")
    p.add_argument("--train", type=int, default=64, help="training pairs (default 64)")
    p.add_argument("--val", type=int, default=8, help="validation pairs (default 8)")
    p.add_argument("--test", type=int, default=16, help="test pairs (default 16)")
    p.add_argument("--size", type=int, default=256, help="image side in pixels (default 256)")
    p.add_argument("--seed", type=int, default=0, help="global seed (default 0)")
    p.add_argument(
        "--max-coc",
        type=float,
        default=None,
        help="largest circle-of-confusion radius in px (default 12 * size / 256)",
    )
    p.add_argument("--bit-depth", type=int, choices=(8, 16), default=8, help="PNG bit depth")
    p.add_argument(
        "--noise",
        type=float,
        default=0.0,
        help="shot-noise std at full scale, linear light (default 0)",
    )
    p.add_argument("--read-noise", type=float, default=0.0, help="read-noise std (default 0)")
    p.add_argument(
        "--noise-per-pair",
        action="store_true",
        help="draw each pair's noise levels uniformly in [0, --noise] and [0, --read-noise]",
    )
    p.add_argument(
        "--val-scenes",
        choices=("held_out", "train"),
        default="held_out",
        help="validation scenes from the val split's own photographs (default) or new scenes "
        "from the training photographs",
    )
    p.add_argument("--layers", type=int, default=16, help="depth layers (default 16)")
    p.add_argument("--workers", type=int, default=1, help="rendering processes (default 1)")
    p.add_argument("--force", action="store_true", help="regenerate even if a matching set exists")
    p.add_argument("--quiet", action="store_true", help="no progress bar")
    p.add_argument("--debug", action="store_true", help="show tracebacks on errors")
    return p


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point of ``nrknet-synth``; returns the exit status."""
    args_list = list(sys.argv[1:] if argv is None else argv)
    return _run(args_list, debug="--debug" in args_list)


@reported("nrknet-synth", debug=lambda args_list, debug: debug)
def _run(args_list: list[str], debug: bool) -> int:
    try:
        args = _build_parser().parse_args(args_list)
        number("--workers", args.workers, minimum=1, integer=True)
        settings = SynthSettings(
            num_train=args.train,
            num_val=args.val,
            num_test=args.test,
            size=args.size,
            seed=args.seed,
            max_coc=args.max_coc,
            bit_depth=args.bit_depth,
            noise=args.noise,
            read_noise=args.read_noise,
            num_layers=args.layers,
            noise_per_pair=args.noise_per_pair,
            val_scenes=args.val_scenes,
        )
        reused = not args.force and is_complete_dataset(args.out, settings)
        start = time.perf_counter()
        out = generate_dataset(
            args.out, settings, workers=args.workers, progress=not args.quiet, force=args.force
        )
    except KeyboardInterrupt:
        print("nrknet-synth: interrupted; no partial set was left behind", file=sys.stderr)
        return 130
    total = sum(settings.counts().values())
    if reused:
        print(f"{out}: complete set with these settings already present, reused")
    else:
        print(f"wrote {total} pairs to {out} in {time.perf_counter() - start:.1f} s")
    return 0
