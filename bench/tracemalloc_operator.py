"""`kubesessions` with tracemalloc on, its top allocation sites written every 10 s.

Run by benchcluster.operator when BENCH_OPERATOR_IMPORTS=tracemalloc (as `python -c`, so it is
read as text): `BENCH_OPERATOR_IMPORTS=tracemalloc .venv/bin/python bench/operator_bench.py`.
"""

import sys
import threading
import time
import tracemalloc
from pathlib import Path

OUT = Path("bench-results/operator.tracemalloc.txt")


def dump() -> None:
    while True:
        time.sleep(10)
        top = tracemalloc.take_snapshot().statistics("lineno")
        lines = [str(stat) for stat in top[:60]]
        lines.append(f"total traced {sum(stat.size for stat in top) / 1e6:.1f} MB")
        OUT.write_text("\n".join(lines) + "\n")


tracemalloc.start()
threading.Thread(target=dump, daemon=True).start()
from kubesessions.cli.entry import main  # noqa: E402 - traced from here on

sys.argv[0] = "kubesessions"
main()
