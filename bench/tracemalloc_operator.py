"""`kubesessions` with tracemalloc on: what it holds by package (imports included: the
modules' code and objects are allocations too) and its top allocation sites, written every 10 s.

Run by benchcluster.operator when BENCH_OPERATOR_IMPORTS=tracemalloc (as `python -c`, so it is
read as text): `BENCH_OPERATOR_IMPORTS=tracemalloc .venv/bin/python bench/operator_bench.py`.
"""

import sys
import threading
import time
import tracemalloc
from pathlib import Path

OUT = Path("bench-results/operator.tracemalloc.txt")


def package(filename: str) -> str:
    """A file's package: its top-level name under site-packages or the standard library, or
    kubesessions' sub-package (kubesessions.kube, kubesessions.control, ...)."""
    parts = Path(filename).parts
    if "kubesessions" in parts:
        rest = parts[parts.index("kubesessions") + 1 :]
        return "kubesessions." + rest[0].removesuffix(".py") if len(rest) > 1 else "kubesessions"
    for marker in ("site-packages", "python3.11", "lib"):
        if marker in parts and parts.index(marker) + 1 < len(parts):
            return parts[parts.index(marker) + 1].removesuffix(".py")
    return filename


def dump() -> None:
    while True:
        time.sleep(10)
        snapshot = tracemalloc.take_snapshot()
        by_package: dict[str, int] = {}
        for stat in snapshot.statistics("filename"):
            name = package(stat.traceback[0].filename)
            by_package[name] = by_package.get(name, 0) + stat.size
        top = snapshot.statistics("lineno")
        lines = [f"total traced {sum(stat.size for stat in top) / 1e6:.1f} MB", "", "by package:"]
        lines += [
            f"{size / 1e6:8.2f} MB  {name}"
            for name, size in sorted(by_package.items(), key=lambda kv: -kv[1])[:40]
        ]
        lines += ["", "top allocation sites:", *(str(stat) for stat in top[:60])]
        OUT.write_text("\n".join(lines) + "\n")


tracemalloc.start()
threading.Thread(target=dump, daemon=True).start()
from kubesessions.cli.entry import main  # noqa: E402 - traced from here on

sys.argv[0] = "kubesessions"
main()
