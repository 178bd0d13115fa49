"""Data: DuckDB loads a Parquet dataset once in ``setup``; analyses answer from memory.

The dataset (sales rows: a timestamp over 2025, a region, a product, price, quantity, discount,
revenue) is generated on first use into the worker's scratch dir (``TMPDIR``), deterministically
from ``seed``: the same ``rows`` and ``seed`` give the same file anywhere. Config:
``{"rows": 3000000, "seed": 7, "dataDir": "<dir>"}``, or the App's env ``DATA_ROWS``,
``DATA_SEED``, ``DATA_DIR`` (pooled workers run ``setup`` without config); ``dataDir`` defaults to
the scratch dir: point it at a volume to keep the file across pods. Functions: ``summary``, ``correlations``,
``outliers`` (``{"z": 2.5}``: rows beyond z standard deviations), ``trends`` (``{"region": "north"}`` optional); ``run`` = ``summary``.

Suspendable: the session's state is which dataset it loaded, and the data is made again from
its parameters, deterministically, so ``suspend`` saves the parameters (``dataset.json``: a few
bytes, not the 100 MB table); ``resume`` on a worker that loaded another dataset (a pool worker
set up from the App's env, say) loads the saved one.
"""

from __future__ import annotations

import datetime
import json
import os
import tempfile
import time
from pathlib import Path
from typing import Any

import duckdb

from kubesessions_worker import function

# Made in SQL from hash(seed, i): deterministic, no RNG state, and as fast as DuckDB writes.
GENERATE = """
COPY (
  SELECT id, ts, region, product, price,
         -- cheaper goods sell in more units: a correlation for `correlations` to find
         (1 + h5 % (26 - floor(price / 5)::UBIGINT))::INTEGER AS quantity,
         (h6 % 30) / 100.0 AS discount
  FROM (
    SELECT i AS id,
           TIMESTAMP '2025-01-01' + to_seconds((hash(i, $seed, 1) % 31536000)::BIGINT) AS ts,
           ['north', 'south', 'east', 'west', 'central', 'islands'][(1 + hash(i, $seed, 2) % 6)::BIGINT]
             AS region,
           'p' || lpad((hash(i, $seed, 3) % 50)::VARCHAR, 2, '0') AS product,
           round(5 + (hash(i, $seed, 4) % 9500) / 100.0, 2) AS price,
           hash(i, $seed, 5) AS h5,
           hash(i, $seed, 6) AS h6
    FROM range($rows) t(i)
  )
) TO '{path}' (FORMAT parquet)
"""
LOAD = """
CREATE TABLE sales AS
SELECT *, round(price * quantity * (1 - discount), 2) AS revenue FROM read_parquet(?)
"""

# The analyses, by name: the same SQL a test (or you) can run anywhere on the same file.
QUERIES = {
    "summary": """
        SELECT region, count(*) AS rows, round(sum(revenue), 2) AS revenue,
               round(avg(price), 4) AS avg_price, sum(quantity) AS units
        FROM sales GROUP BY region ORDER BY region""",
    "correlations": """
        SELECT round(corr(price, quantity), 6) AS price_quantity,
               round(corr(discount, revenue), 6) AS discount_revenue,
               round(corr(price, revenue), 6) AS price_revenue,
               round(corr(quantity, revenue), 6) AS quantity_revenue
        FROM sales""",
    "outliers": """
        WITH s AS (SELECT avg(revenue) AS m, stddev_pop(revenue) AS sd FROM sales)
        SELECT id, revenue, round((revenue - m) / sd, 4) AS z, count(*) OVER () AS beyond
        FROM sales, s WHERE abs(revenue - m) / sd > ?
        ORDER BY abs(revenue - m) DESC, id LIMIT 10""",
    "trends": """
        SELECT strftime(month, '%Y-%m') AS month, round(revenue, 2) AS revenue, rows
        FROM (SELECT date_trunc('month', ts) AS month, sum(revenue) AS revenue, count(*) AS rows
              FROM sales WHERE ? IS NULL OR region = ? GROUP BY 1)
        ORDER BY 1""",
}


def dataset(rows: int, seed: int, data_dir: str | None = None) -> Path:
    """The Parquet file for ``rows``/``seed``, generated if missing (atomically: a pod killed
    half-way leaves no half file behind)."""
    folder = Path(data_dir or tempfile.gettempdir()) / "kubesessions-data"
    folder.mkdir(parents=True, exist_ok=True)
    path = folder / f"sales-{rows}-{seed}.parquet"
    if not path.exists():
        partial = path.with_suffix(f".{os.getpid()}.partial")
        with connect() as con:
            con.execute(GENERATE.format(path=partial), {"seed": seed, "rows": rows})
        partial.rename(path)
    return path


def connect() -> duckdb.DuckDBPyConnection:
    con = duckdb.connect()
    con.execute("SET enable_progress_bar = false")  # no bars on the worker's output (its log)
    return con


def load(path: Path) -> duckdb.DuckDBPyConnection:
    con = connect()  # in memory: the table lives as long as the worker
    con.execute(LOAD, [str(path)])
    return con


def answer(
    con: duckdb.DuckDBPyConnection, name: str, params: list[Any] | None = None
) -> list[dict[str, Any]]:
    cursor = con.execute(QUERIES[name], params or [])
    columns = [d[0] for d in cursor.description]
    return [dict(zip(columns, map(_plain, row), strict=True)) for row in cursor.fetchall()]


def _plain(value: Any) -> Any:
    if isinstance(value, datetime.date | datetime.datetime):
        return value.isoformat()
    return value


class DataApp:
    setup_runs = 0  # per process: a pooled worker's first session shows 1, set before it was claimed

    def setup(self, config: dict[str, Any]) -> None:
        started = time.perf_counter()
        # Config first, then the App's env (what pooled workers, set up without config, see).
        self.rows = int(config.get("rows") or os.environ.get("DATA_ROWS") or 3_000_000)
        seed = int(config.get("seed") or os.environ.get("DATA_SEED") or 7)
        self.seed, self.data_dir = seed, config.get("dataDir") or os.environ.get("DATA_DIR")
        self.path = dataset(self.rows, seed, self.data_dir)
        self.con = load(self.path)
        DataApp.setup_runs += 1
        self.setup_at = time.time()
        self.setup_seconds = time.perf_counter() - started

    def suspend(self, dir: Path) -> None:
        (dir / "dataset.json").write_text(json.dumps({"rows": self.rows, "seed": self.seed}))

    def resume(self, dir: Path) -> None:
        saved = json.loads((dir / "dataset.json").read_text())
        rows, seed = int(saved["rows"]), int(saved["seed"])
        if (rows, seed) != (self.rows, self.seed):
            self.con.close()
            self.rows, self.seed = rows, seed
            self.path = dataset(rows, seed, self.data_dir)
            self.con = load(self.path)

    def _out(self, name: str, params: list[Any] | None = None) -> dict[str, Any]:
        started = time.perf_counter()
        result = answer(self.con, name, params)
        return {
            "result": result,
            "rows": self.rows,
            "setupRuns": DataApp.setup_runs,
            "setupAt": self.setup_at,
            "setupSeconds": round(self.setup_seconds, 3),
            "queryMs": round((time.perf_counter() - started) * 1000, 3),
        }

    def run(self, input: dict[str, Any]) -> dict[str, Any]:
        return self._out("summary")

    @function
    def summary(self, input: dict[str, Any]) -> dict[str, Any]:
        return self._out("summary")

    @function
    def correlations(self, input: dict[str, Any]) -> dict[str, Any]:
        return self._out("correlations")

    @function
    def outliers(self, input: dict[str, Any]) -> dict[str, Any]:
        return self._out("outliers", [float(input.get("z", 2.5))])

    @function
    def trends(self, input: dict[str, Any]) -> dict[str, Any]:
        region = input.get("region")
        return self._out("trends", [region, region])

    def close(self) -> None:
        self.con.close()
