"""`--smoke`, the size of every benchmark that a test runs: seconds instead of minutes.

A smoke run checks that a benchmark still runs to its table (its imports, the trainkit APIs it
calls, its own checks); its figures measure nothing worth quoting.
"""

from __future__ import annotations

import argparse


def parse_args(parser: argparse.ArgumentParser, argv: list[str] | None, **smoke: object) -> argparse.Namespace:
    """Parse `argv` with a `--smoke` flag added, which sets the options named in `smoke` to those values."""
    sizes = ", ".join(f"--{name.replace('_', '-')} {value}" for name, value in smoke.items())
    parser.add_argument("--smoke", action="store_true", help=f"a few seconds' run to check the script works ({sizes})")
    args = parser.parse_args(argv)
    if args.smoke:
        for name, value in smoke.items():
            setattr(args, name, value)
    return args
