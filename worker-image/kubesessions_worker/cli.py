"""`kubesessions-worker`: serve one session's app (see docs/worker-contract.md)."""

from __future__ import annotations

import os
import sys
from collections.abc import Sequence

from kubesessions.common import eventloop, extras

from . import logs, termination
from .settings import Settings, SettingsError, termination_path
from .termination import Ending, Reason


def main(argv: Sequence[str] | None = None) -> int:
    absent = extras.missing("worker")
    try:
        if absent:
            raise SettingsError(extras.hint("kubesessions-worker", "worker", absent))
        settings = Settings.load(argv, os.environ)
    except SettingsError as exc:
        # The operator reads the termination message; a misconfigured pod must say why.
        termination.write(termination_path(argv, os.environ), Ending(Reason.SETUP_FAILED, str(exc)), None)
        print(f"kubesessions-worker: {exc}", file=sys.stderr)
        return 1
    from .lifecycle import serve  # imports the worker's dependencies

    logs.setup(settings.session_id, settings.log_level)
    return eventloop.run(serve(settings)).exit_code
