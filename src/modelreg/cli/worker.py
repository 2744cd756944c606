"""``modelreg worker``: run background jobs (scans) and deliver events to plugins."""

from __future__ import annotations

import signal
import threading

import click

from ..worker.runner import Worker
from . import assemble, ini_argument


@click.command()
@ini_argument
@click.option("--once", is_flag=True,
              help="Run every due job and deliver every due event, then exit.")
def worker(config_uri: str, once: bool) -> None:
    """Run the background worker of the deployment until interrupted (Ctrl-C, SIGTERM)."""
    registry = assemble(config_uri)
    runner = Worker.from_registry(registry)
    try:
        if once:
            count = runner.run_once()
            click.echo(f"worker {runner.id}: {count} job(s) and deliveries attempted")
            return
        stop = threading.Event()

        def request_stop(signum: int, frame: object) -> None:
            stop.set()

        signal.signal(signal.SIGINT, request_stop)
        signal.signal(signal.SIGTERM, request_stop)
        click.echo(f"worker {runner.id} running; stop with Ctrl-C")
        runner.run_forever(stop)
    finally:
        runner.close()
