"""The `kubesessions` console script: the operator's dependencies first, then the CLI."""

from __future__ import annotations

import sys
from collections.abc import Sequence

from kubesessions.common import extras


def main(argv: Sequence[str] | None = None) -> None:
    absent = extras.missing("operator")
    if absent:
        print(f"kubesessions: {extras.hint('kubesessions', 'operator', absent)}", file=sys.stderr)
        sys.exit(2)
    from kubesessions.cli.commands import main as cli_main  # imports the operator's dependencies

    cli_main(argv)
