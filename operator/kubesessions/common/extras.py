"""Which optional parts of the distribution are installed, read from its own metadata.

The base install is the client; ``[operator]`` and ``[worker]`` add what the commands need.
A command run without its extra says which one to install instead of failing on an import
deep inside. Standard library only: this runs before anything else can be imported.
"""

from __future__ import annotations

import re
from importlib import metadata

DISTRIBUTION = "kube-sessions"
_NAME = re.compile(r"[A-Za-z0-9][A-Za-z0-9._-]*")


def missing(extra: str) -> list[str]:
    """The distributions the extra requires that are not installed.

    Requirements with further conditions (uvloop: not on Windows) are optional by nature and
    not reported. Run from a source tree without the distribution installed, nothing is known,
    so nothing is reported.
    """
    try:
        requirements = metadata.requires(DISTRIBUTION) or []
    except metadata.PackageNotFoundError:
        return []
    wanted = f"extra == {extra!r}".replace("'", '"')
    absent = []
    for requirement in requirements:
        spec, _, marker = requirement.partition(";")
        name = _NAME.match(spec.strip())
        if name is None or marker.strip().replace("'", '"') != wanted:
            continue
        try:
            metadata.version(name.group())
        except metadata.PackageNotFoundError:
            absent.append(name.group())
    return absent


def hint(command: str, extra: str, absent: list[str]) -> str:
    return (
        f"{command} needs the [{extra}] extra, which is not installed (missing: {', '.join(absent)}): "
        f"pip install '{DISTRIBUTION}[{extra}]'"
    )
