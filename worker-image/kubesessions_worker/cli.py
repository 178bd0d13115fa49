"""`kubesessions-worker`: serve one session's app (see docs/worker-contract.md)."""

from __future__ import annotations

import asyncio
import os
import sys
from collections.abc import Sequence

from . import logs, termination
from .lifecycle import serve
from .settings import Settings, SettingsError, termination_path
from .termination import Ending, Reason


def main(argv: Sequence[str] | None = None) -> int:
    try:
        settings = Settings.load(argv, os.environ)
    except SettingsError as exc:
        # The operator reads the termination message; a misconfigured pod must say why.
        termination.write(termination_path(argv, os.environ), Ending(Reason.SETUP_FAILED, str(exc)), None)
        print(f"kubesessions-worker: {exc}", file=sys.stderr)
        return 1
    logs.setup(settings.session_id, settings.log_level)
    return asyncio.run(serve(settings)).exit_code
