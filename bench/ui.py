"""Web UI benchmark: how long the pages of modelreg-web take at 100,000 models.

Fills a fresh database (PostgreSQL by default) with ``--models`` models, their tags,
versions and aliases exactly as ``bench/search.py`` does (its ``fill``), starts a real
Waitress (:class:`modelreg.testing.server.LiveServer`, anonymous reads allowed so that no
session is needed) with the core and modelreg-web, and measures through HTTP with one
keep-alive client p50/p99 of:

* ``GET /healthz`` (the baseline);
* the home page ``/`` (50 models, no filter), a search (``?q=fraud-1``) and a tag filter;
* a model's page (card, versions, aliases and their history), of a model with a champion;
* a version's page.

Usage::

    python bench/ui.py --models 100000 --versions-per-model 10

The figures include the loopback round trip, so they bound the server's time from above.
The database is dropped at the end.  This prints figures; it is not a test.
"""

from __future__ import annotations

import argparse
import random
import sys
import urllib.parse
from collections.abc import Callable, Sequence
from pathlib import Path

sys.path.insert(0, str(Path(__file__).parent))

import search

from modelreg.testing import CORE_PLUGINS, TestDatabase
from modelreg.testing.server import LiveServer

PLUGINS = (*CORE_PLUGINS, "modelreg_web.plugin")


class HtmlClient(search.Client):
    """One keep-alive connection asking for pages."""

    def get(self, path: str) -> bytes:
        self.conn.request("GET", path, headers={"Accept": "text/html"})
        response = self.conn.getresponse()
        body = response.read()
        if response.status != 200:
            raise RuntimeError(f"GET {path}: {response.status} {body[:500]!r}")
        return body


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--models", type=int, default=100_000)
    parser.add_argument("--versions-per-model", type=int, default=10)
    parser.add_argument("--requests", type=int, default=200)
    parser.add_argument("--warmup", type=int, default=20)
    parser.add_argument("--backend", default="postgresql",
                        choices=("postgresql", "sqlite", "mariadb"))
    args = parser.parse_args(argv)
    rng = random.Random(7)
    db = TestDatabase.create(args.backend, PLUGINS)
    try:
        engine = db.engine()
        search.fill(engine, 1, args.models + 1, args.versions_per_model, rng)
        engine.dispose()
        with_alias = [search.model_name(i) for i in range(1, args.models + 1)
                      if search.champion(i, args.versions_per_model) is not None]
        tag = urllib.parse.urlencode({"filter": search.TAG_FILTER})
        operations: list[tuple[str, Callable[[], str]]] = [
            ("GET /healthz", lambda: "/healthz"),
            ("home /", lambda: "/"),
            ("search ?q=fraud-1", lambda: "/ui/models?q=fraud-1"),
            (f"filter {search.TAG_FILTER}", lambda: f"/ui/models?{tag}"),
            ("model page", lambda: f"/ui/models/{rng.choice(with_alias)}"),
            ("version page", lambda: f"/ui/models/{rng.choice(with_alias)}/versions/1"),
        ]
        settings = {"sqlalchemy.url": db.url, "retry.attempts": "3",
                    "modelreg.auth.anonymous": "read"}
        with LiveServer(settings, threads=8, plugins=PLUGINS) as server:
            client = HtmlClient(server.port)
            try:
                home = client.get("/").decode()
                cards = home.count('<li class="card">')
                print(f"home page: {cards} models, "
                      f"{len(home):,} bytes", flush=True)
                print(f"\n{'page':<34} {'models':>8} {'p50 ms':>8} {'p99 ms':>8}")
                for name, paths in operations:
                    p50, p99 = search.measure(client, paths, args.requests, args.warmup)
                    print(f"{name:<34} {args.models:>8,} {p50:>8.1f} {p99:>8.1f}",
                          flush=True)
            finally:
                client.close()
    finally:
        db.drop()
    return 0


if __name__ == "__main__":
    sys.exit(main())
