"""``python -m coreai_opt.demo``: train, quantize, print the table, write the results.

Options: ``--out DIR`` (default ``docs/demo``) for ``demo_results.md`` and the PNG charts,
``--quick`` for a small run, ``--seeds``, ``--models``, ``--configs``, ``--modes``,
``--no-sensitivity``, ``--threads``, ``--no-progress``, ``--fail-fast`` (raise the first
error of a quantized run instead of listing it under the table).
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Sequence
from dataclasses import replace

from rich.console import Console

from coreai_opt.demo.configs import DEMO_CONFIGS, MODES
from coreai_opt.demo.report import print_report, write_outputs
from coreai_opt.demo.run import MODELS, DemoSettings, run_demo

__all__ = ["main", "parse_args"]

DEFAULT_OUT = "docs/demo"


def parse_args(argv: Sequence[str] | None = None) -> argparse.Namespace:
    """The command line of ``python -m coreai_opt.demo``."""
    parser = argparse.ArgumentParser(
        prog="python -m coreai_opt.demo",
        description="Train a small CNN and transformer on scikit-learn's digits, quantize "
        "them with coreai_opt in eager and graph mode and compare accuracy, agreement and "
        "size.",
    )
    parser.add_argument("--out", default=DEFAULT_OUT, help=f"output folder (default {DEFAULT_OUT})")
    parser.add_argument("--quick", action="store_true", help="one seed, shorter training")
    parser.add_argument("--seeds", type=int, nargs="+", help="training seeds (default 0 1 2)")
    parser.add_argument("--models", nargs="+", choices=sorted(MODELS), help="models to run")
    parser.add_argument(
        "--configs", nargs="+", choices=[c.key for c in DEMO_CONFIGS], help="configs to run"
    )
    parser.add_argument(
        "--modes", nargs="+", choices=MODES, help=f"execution modes (default {' '.join(MODES)})"
    )
    parser.add_argument("--no-sensitivity", action="store_true", help="skip the layer analysis")
    parser.add_argument("--threads", type=int, default=1, help="torch threads (default 1)")
    parser.add_argument("--no-progress", action="store_true", help="hide the progress bars")
    parser.add_argument(
        "--fail-fast", action="store_true", help="raise the first error of a quantized run"
    )
    return parser.parse_args(argv)


def main(argv: Sequence[str] | None = None) -> int:
    """Run the demo; returns the exit status."""
    args = parse_args(argv)
    settings = DemoSettings.quick() if args.quick else DemoSettings()
    changes: dict[str, object] = {"threads": args.threads, "fail_fast": args.fail_fast}
    if args.seeds:
        changes["seeds"] = tuple(args.seeds)
    if args.models:
        changes["models"] = tuple(args.models)
    if args.configs:
        changes["configs"] = tuple(args.configs)
    if args.modes:
        changes["modes"] = tuple(dict.fromkeys(args.modes))
    if args.no_sensitivity or "cnn" not in changes.get("models", settings.models):  # type: ignore[operator]
        changes["sensitivity"] = False
    settings = replace(settings, **changes)  # type: ignore[arg-type]
    console = Console()
    if not console.is_terminal:
        console = Console(width=max(console.width, 150))
    progress = None if not args.no_progress else False
    report = run_demo(settings, console=console, progress=progress)
    report = write_outputs(report, args.out)
    print_report(report, console)
    return 0


if __name__ == "__main__":
    sys.exit(main())
