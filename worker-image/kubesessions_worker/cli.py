"""`kubesessions-worker`: placeholder until the worker runtime lands (issue 5)."""

import sys


def main() -> None:
    sys.exit("kubesessions-worker: not built yet")
