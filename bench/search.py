"""Search benchmark: latency of searches and alias look-ups as the registry grows.

Creates a fresh database (PostgreSQL by default), bulk-fills it with models, tags, versions
and aliases straight through the engine (COPY on PostgreSQL, executemany elsewhere), and at
each step size starts a real Waitress server (:class:`modelreg.testing.server.LiveServer`)
and measures, through HTTP with one keep-alive client, p50/p99 latency of:

* ``GET /healthz`` (the baseline: a request that touches no database);
* the first page of 100 models without a filter (what rendering a page costs by itself);
* a name-prefix search: ``filter=name LIKE 'fraud-1%'``, first page of 100;
* a tag filter: ``filter=tag.team = 'team-7'``, first page of 100;
* an alias look-up: ``GET /api/v1/models/<name>/aliases/champion``;
* a version by alias: ``GET /api/v1/models/<name>/versions/champion``.

Usage::

    python bench/search.py --models 100000 --versions-per-model 10 --steps 10000,100000

The database is dropped at the end, also on errors and Ctrl-C.  This prints figures; it is
not a test.
"""

from __future__ import annotations

import argparse
import datetime as dt
import hashlib
import http.client
import json
import random
import statistics
import sys
import time
import urllib.parse
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass
from typing import Any

import sqlalchemy as sa

from modelreg.models import Base
from modelreg.testing import TestDatabase
from modelreg.testing.server import LiveServer

PREFIXES = ("fraud", "churn", "ranker", "forecast", "vision", "nlp", "recsys", "anomaly",
            "pricing")
TEAMS = 20
TIERS = ("gold", "silver", "bronze")
ALIAS_EVERY = 5  # one model in five has a "champion"
ACTOR = "bench"
BASE_TIME = dt.datetime(2025, 1, 1)
CHUNK = 20_000

NAME_FILTER = "name LIKE 'fraud-1%'"
#: The first page without a filter: the cost of rendering 100 models, as a reference.
PAGE_PATH = "/api/v1/models?page_size=100"
TAG_FILTER = "tag.team = 'team-7'"

JSON_COLUMNS = {"metadata", "lineage", "problems"}

MODEL_COLUMNS = ("id", "name", "normalized_name", "description", "next_version", "created_at",
                 "updated_at", "created_by", "updated_by")
TAG_COLUMNS = ("model_id", "key", "value")
VERSION_COLUMNS = ("id", "model_id", "number", "status", "description", "metadata", "lineage",
                   "problems", "digest", "created_at", "updated_at", "finalized_at",
                   "created_by", "updated_by")
ALIAS_COLUMNS = ("model_id", "name", "version_id", "updated_at", "updated_by")
HISTORY_COLUMNS = ("model_id", "alias", "from_version", "to_version", "actor", "at")


# ------------------------------------------------------------------------------ data


def model_name(i: int) -> str:
    """Model ``i`` (1-based): prefixes in turn, each with its own counter from 0."""
    return f"{PREFIXES[i % len(PREFIXES)]}-{i // len(PREFIXES)}"


def version_status(i: int, n: int, last: int) -> str:
    """Mostly ready; a few rejected, and the newest version of one model in seven a draft."""
    if n == last and i % 7 == 0:
        return "draft"
    if (i * 31 + n) % 23 == 0:
        return "rejected"
    return "ready"


def champion(i: int, per_model: int) -> int | None:
    """The version number model ``i``'s champion points at (its newest ready), or None."""
    if i % ALIAS_EVERY:
        return None
    for n in range(per_model, 0, -1):
        if version_status(i, n, per_model) == "ready":
            return n
    return None


def model_rows(start: int, stop: int, per_model: int) -> Iterator[tuple[Any, ...]]:
    for i in range(start, stop):
        name = model_name(i)
        at = BASE_TIME + dt.timedelta(seconds=i)
        yield (i, name, name.lower(), f"benchmark model {i}", per_model + 1, at, at, ACTOR,
               ACTOR)


def tag_rows(start: int, stop: int, rng: random.Random) -> Iterator[tuple[Any, ...]]:
    """1 to 3 tags per model: ``team`` (9 in 10), ``tier`` (2 in 3 and all without a team),
    ``domain`` (1 in 4)."""
    for i in range(start, stop):
        has_team = i % 10 != 0
        if has_team:
            yield (i, "team", f"team-{rng.randrange(TEAMS)}")
        if i % 3 != 0 or not has_team:
            yield (i, "tier", TIERS[i % len(TIERS)])
        if i % 4 == 0:
            yield (i, "domain", PREFIXES[i % len(PREFIXES)])


def version_rows(start: int, stop: int, per_model: int) -> Iterator[tuple[Any, ...]]:
    for i in range(start, stop):
        for n in range(1, per_model + 1):
            status = version_status(i, n, per_model)
            at = BASE_TIME + dt.timedelta(seconds=i, milliseconds=n)
            digest = problems = finalized = None
            if status == "ready":
                digest = "sha256:" + hashlib.sha256(f"{i}/{n}".encode()).hexdigest()
                finalized = at
            elif status == "rejected":
                problems = [{"code": "bench", "message": "rejected by the benchmark",
                             "field": None}]
                finalized = at
            yield ((i - 1) * per_model + n, i, n, status, "", {}, {}, problems, digest, at, at,
                   finalized, ACTOR, ACTOR)


def alias_rows(start: int, stop: int, per_model: int) -> Iterator[tuple[Any, ...]]:
    for i in range(start, stop):
        number = champion(i, per_model)
        if number is not None:
            at = BASE_TIME + dt.timedelta(seconds=i, minutes=1)
            yield (i, "champion", (i - 1) * per_model + number, at, ACTOR)


def history_rows(start: int, stop: int, per_model: int) -> Iterator[tuple[Any, ...]]:
    for i in range(start, stop):
        number = champion(i, per_model)
        if number is not None:
            at = BASE_TIME + dt.timedelta(seconds=i, minutes=1)
            yield (i, "champion", None, number, ACTOR, at)


def chunks(rows: Iterator[tuple[Any, ...]], size: int = CHUNK) -> Iterator[list[tuple[Any, ...]]]:
    chunk: list[tuple[Any, ...]] = []
    for row in rows:
        chunk.append(row)
        if len(chunk) >= size:
            yield chunk
            chunk = []
    if chunk:
        yield chunk


def _json_text(columns: Sequence[str], row: tuple[Any, ...]) -> tuple[Any, ...]:
    return tuple(
        json.dumps(value) if column in JSON_COLUMNS and value is not None else value
        for column, value in zip(columns, row, strict=True)
    )


def load(engine: sa.Engine, table: str, columns: Sequence[str],
         rows: Iterator[tuple[Any, ...]]) -> int:
    """Insert ``rows`` into ``table``: COPY on PostgreSQL, chunked executemany elsewhere."""
    count = 0
    if engine.dialect.name == "postgresql":
        raw = engine.raw_connection()
        try:
            conn = raw.driver_connection
            with conn.cursor() as cursor:
                statement = f"COPY {table} ({', '.join(columns)}) FROM STDIN"
                with cursor.copy(statement) as copy:
                    for row in rows:
                        copy.write_row(_json_text(columns, row))
                        count += 1
            conn.commit()
        finally:
            raw.close()
        return count
    target = Base.metadata.tables[table]  # typed columns: dicts become JSON on every backend
    with engine.begin() as conn:
        for chunk in chunks(rows):
            conn.execute(target.insert(), [dict(zip(columns, row, strict=True))
                                           for row in chunk])
            count += len(chunk)
    return count


def fill(engine: sa.Engine, start: int, stop: int, per_model: int, rng: random.Random,
         vacuum: bool = False) -> None:
    """Add models ``start`` .. ``stop - 1`` with their tags, versions and aliases."""
    began = time.perf_counter()
    counts = {
        "models": load(engine, "models", MODEL_COLUMNS, model_rows(start, stop, per_model)),
        "model_tags": load(engine, "model_tags", TAG_COLUMNS, tag_rows(start, stop, rng)),
        "versions": load(engine, "versions", VERSION_COLUMNS,
                         version_rows(start, stop, per_model)),
        "aliases": load(engine, "aliases", ALIAS_COLUMNS, alias_rows(start, stop, per_model)),
        "alias_history": load(engine, "alias_history", HISTORY_COLUMNS,
                              history_rows(start, stop, per_model)),
    }
    with engine.begin() as conn:
        if engine.dialect.name == "postgresql":
            for table in ("models", "versions", "alias_history"):
                conn.exec_driver_sql(
                    f"SELECT setval(pg_get_serial_sequence('{table}', 'id'), "
                    f"(SELECT max(id) FROM {table}))"
                )
    analyze(engine, vacuum)
    took = time.perf_counter() - began
    shown = ", ".join(f"{count:,} {table}" for table, count in counts.items())
    print(f"filled {shown} in {took:.1f} s", flush=True)


def analyze(engine: sa.Engine, vacuum: bool = False) -> None:
    """Refresh the planner's statistics (and on PostgreSQL, with ``vacuum``, VACUUM first)."""
    if engine.dialect.name == "postgresql":
        with engine.connect().execution_options(isolation_level="AUTOCOMMIT") as conn:
            conn.exec_driver_sql("VACUUM ANALYZE" if vacuum else "ANALYZE")
    elif engine.dialect.name == "sqlite":
        with engine.begin() as conn:
            conn.exec_driver_sql("ANALYZE")
    else:
        with engine.begin() as conn:
            for table in ("models", "model_tags", "versions", "aliases", "alias_history"):
                conn.exec_driver_sql(f"ANALYZE TABLE {table}")


# -------------------------------------------------------------------------- measuring


@dataclass
class Result:
    operation: str
    models: int
    p50: float
    p99: float
    baseline: float = 0.0


class Client:
    """One keep-alive HTTP connection."""

    def __init__(self, port: int) -> None:
        self.conn = http.client.HTTPConnection("127.0.0.1", port, timeout=60)

    def get(self, path: str) -> bytes:
        self.conn.request("GET", path, headers={"Accept": "application/json"})
        response = self.conn.getresponse()
        body = response.read()
        if response.status != 200:
            raise RuntimeError(f"GET {path}: {response.status} {body[:500]!r}")
        return body

    def close(self) -> None:
        self.conn.close()


def percentile(samples: list[float], fraction: float) -> float:
    """The ``fraction`` quantile of ``samples`` (nearest rank)."""
    ordered = sorted(samples)
    index = min(len(ordered) - 1, max(0, round(fraction * len(ordered)) - 1))
    return ordered[index]


def measure(client: Client, paths: Callable[[], str], requests: int,
            warmup: int) -> tuple[float, float]:
    """p50 and p99 in milliseconds of ``requests`` GETs after ``warmup`` unmeasured ones."""
    for _ in range(warmup):
        client.get(paths())
    samples = []
    for _ in range(requests):
        path = paths()
        began = time.perf_counter()
        client.get(path)
        samples.append((time.perf_counter() - began) * 1000)
    return statistics.median(samples), percentile(samples, 0.99)


def models_path(filter_text: str) -> str:
    return "/api/v1/models?" + urllib.parse.urlencode({"filter": filter_text, "page_size": 100})


def run_step(db: TestDatabase, models: int, per_model: int, requests: int,
             warmup: int, rng: random.Random, extra: dict[str, str]) -> list[Result]:
    """Measure every operation against a fresh server over the first ``models`` models."""
    with_alias = [model_name(i) for i in range(1, models + 1)
                  if champion(i, per_model) is not None]

    def alias_path() -> str:
        return f"/api/v1/models/{rng.choice(with_alias)}/aliases/champion"

    def version_path() -> str:
        return f"/api/v1/models/{rng.choice(with_alias)}/versions/champion"

    name_path, tag_path = models_path(NAME_FILTER), models_path(TAG_FILTER)
    operations: list[tuple[str, Callable[[], str]]] = [
        ("GET /healthz", lambda: "/healthz"),
        ("models, no filter", lambda: PAGE_PATH),
        (f"models {NAME_FILTER}", lambda: name_path),
        (f"models {TAG_FILTER}", lambda: tag_path),
        ("alias champion", alias_path),
        ("version by alias", version_path),
    ]
    # Anonymous callers may read, so that the client needs no token.
    settings = {"sqlalchemy.url": db.url, "retry.attempts": "3",
                "modelreg.auth.anonymous": "read", **extra}
    results = []
    with LiveServer(settings, threads=8) as server:
        client = Client(server.port)
        try:
            for filter_text, path in ((NAME_FILTER, name_path), (TAG_FILTER, tag_path)):
                page = json.loads(client.get(path))
                print(f"  {filter_text}: first page has {len(page['models'])} models, "
                      f"more: {page['next_page_token'] is not None}", flush=True)
            for operation, paths in operations:
                p50, p99 = measure(client, paths, requests, warmup)
                results.append(Result(operation, models, p50, p99))
        finally:
            client.close()
    baseline = results[0].p50
    for result in results:
        result.baseline = baseline
    return results


def report(results: list[Result]) -> None:
    width = max(len(r.operation) for r in results)
    print()
    print(f"{'operation':<{width}}  {'models':>8}  {'p50 ms':>8}  {'p99 ms':>8}  "
          f"{'x healthz':>9}")
    print("-" * (width + 43))
    for r in results:
        print(f"{r.operation:<{width}}  {r.models:>8,}  {r.p50:>8.2f}  {r.p99:>8.2f}  "
              f"{r.p50 / r.baseline:>9.1f}")
    steps = sorted({r.models for r in results})
    if len(steps) > 1:
        first, last = steps[0], steps[-1]
        print()
        print(f"growth p50({last:,}) / p50({first:,}):")
        by_key = {(r.operation, r.models): r for r in results}
        for operation in dict.fromkeys(r.operation for r in results):
            small, large = by_key[(operation, first)], by_key[(operation, last)]
            print(f"  {operation:<{width}}  {large.p50 / small.p50:5.2f}")


def parse_args(argv: Sequence[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--models", type=int, default=100_000, help="models at the last step")
    parser.add_argument("--versions-per-model", type=int, default=10)
    parser.add_argument("--steps", default="10000,100000",
                        help="comma-separated model counts to measure at (capped at --models)")
    parser.add_argument("--backend", default="postgresql",
                        choices=("postgresql", "mariadb", "sqlite"))
    parser.add_argument("--requests", type=int, default=300, help="measured requests per operation")
    parser.add_argument("--warmup", type=int, default=30, help="unmeasured requests first")
    parser.add_argument("--seed", type=int, default=42)
    parser.add_argument("--vacuum", action="store_true",
                        help="VACUUM ANALYZE after filling (PostgreSQL), not just ANALYZE, as "
                        "autovacuum would eventually; it can change plans")
    parser.add_argument("--setting", action="append", default=[], metavar="KEY=VALUE",
                        help="an extra app setting for the server (repeatable)")
    args = parser.parse_args(argv)
    try:
        args.settings = dict(item.split("=", 1) for item in args.setting)
    except ValueError:
        parser.error("--setting takes KEY=VALUE")
    steps = sorted({min(int(s), args.models) for s in args.steps.split(",") if s.strip()})
    if not steps or steps[-1] != args.models:
        steps.append(args.models)
    args.step_sizes = steps
    return args


def main(argv: Sequence[str] | None = None) -> int:
    args = parse_args(argv)
    rng = random.Random(args.seed)
    print(f"creating a {args.backend} database ...", flush=True)
    db = TestDatabase.create(args.backend)
    results: list[Result] = []
    try:
        engine = db.engine()
        filled = 0
        for step in args.step_sizes:
            print(f"step {step:,} models x {args.versions_per_model} versions", flush=True)
            fill(engine, filled + 1, step + 1, args.versions_per_model, rng, args.vacuum)
            filled = step
            results += run_step(db, step, args.versions_per_model, args.requests,
                                args.warmup, rng, args.settings)
        report(results)
    except KeyboardInterrupt:
        print("interrupted", file=sys.stderr)
        return 130
    finally:
        db.drop()
        print("database dropped", flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
