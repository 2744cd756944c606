"""A real S3-compatible server for tests: moto's standalone server, in a process of its own.

No in-process mocking of boto3: whatever talks to it (the ``modelreg-s3`` backend in a test,
or a :class:`~modelreg.testing.server.LiveServer`) speaks HTTP to a server, as in production::

    with S3Server() as s3:
        settings = {"sqlalchemy.url": db.url, **s3.settings(prefix="run-1")}

The server listens on a free loopback port, the bucket is created when it starts, and the
process is stopped on exit.  moto comes with modelreg's ``test`` extra; the backend that uses
these settings (``modelreg.storage = s3``) is the ``modelreg-s3`` distribution, which the core
does not depend on.  Only the standard library is used here (the bucket is created with a
plain ``PUT``, which moto accepts unsigned), so the module ships with the package.

The session fixture ``modelreg_s3_server`` (in :mod:`modelreg.testing`) runs one for a test
session; without moto it skips, or fails when ``CI=true``.
"""

from __future__ import annotations

import importlib.util
import os
import subprocess
import sys
import tempfile
import time
import urllib.error
import urllib.request
import uuid
from types import TracebackType
from typing import IO

from .server import free_port

__all__ = ["BUCKET", "CREDENTIALS", "REGION", "S3Server", "moto_installed"]

#: The bucket the server is started with.
BUCKET = "modelreg-test"
REGION = "us-east-1"
#: moto accepts any credentials; these are what the settings name.
CREDENTIALS = {"aws_access_key_id": "testing", "aws_secret_access_key": "testing"}
#: Seconds to wait for the server to answer after starting it.
STARTUP_TIMEOUT = 60.0
#: Seconds to wait for the process to end after asking it to.
SHUTDOWN_TIMEOUT = 10.0


def moto_installed() -> bool:
    """Whether moto's server can be started (``moto[server]``, in the ``test`` extra)."""
    return importlib.util.find_spec("moto") is not None and \
        importlib.util.find_spec("moto.server") is not None


class S3Server:
    """moto's S3 server in a child process on ``127.0.0.1`` and a free port.

    Use it as a context manager: entering starts the server, waits until it answers and
    creates ``bucket``; leaving stops it (terminate, then kill) and deletes its log.

    :param bucket: the bucket to create.

    :ivar endpoint: the base URL, e.g. ``http://127.0.0.1:50124`` (set once started).
    """

    def __init__(self, bucket: str = BUCKET, *, startup_timeout: float = STARTUP_TIMEOUT) -> None:
        self.bucket = bucket
        self.startup_timeout = startup_timeout
        self.endpoint = ""
        self.process: subprocess.Popen[bytes] | None = None
        self._log: IO[bytes] | None = None

    def __enter__(self) -> S3Server:
        self.start()
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        traceback: TracebackType | None,
    ) -> None:
        self.stop()

    def settings(self, prefix: str | None = None) -> dict[str, str]:
        """App settings of a store on this server (``modelreg.storage = s3``), under its own
        key ``prefix`` in the bucket (a fresh one by default)."""
        if not self.endpoint:
            raise RuntimeError("the S3 server has not been started")
        return {
            "modelreg.storage": "s3",
            "modelreg.storage.s3.bucket": self.bucket,
            "modelreg.storage.s3.prefix": prefix if prefix is not None
            else f"test-{uuid.uuid4().hex[:12]}",
            "modelreg.storage.s3.endpoint_url": self.endpoint,
            "modelreg.storage.s3.region": REGION,
            "modelreg.storage.s3.access_key_id": CREDENTIALS["aws_access_key_id"],
            "modelreg.storage.s3.secret_access_key": CREDENTIALS["aws_secret_access_key"],
        }

    def start(self) -> None:
        """Start the server, wait until it answers and create the bucket;
        :class:`RuntimeError` if it does not start."""
        if self.process is not None:
            raise RuntimeError("the S3 server is already running")
        port = free_port()
        self.endpoint = f"http://127.0.0.1:{port}"
        self._log = tempfile.TemporaryFile(prefix="modelreg-s3-")
        environ = {**os.environ, "AWS_ACCESS_KEY_ID": CREDENTIALS["aws_access_key_id"],
                   "AWS_SECRET_ACCESS_KEY": CREDENTIALS["aws_secret_access_key"],
                   "AWS_DEFAULT_REGION": REGION}
        self.process = subprocess.Popen(  # noqa: S603 - our own interpreter, a fixed module
            [sys.executable, "-m", "moto.server", "-H", "127.0.0.1", "-p", str(port)],
            stdin=subprocess.DEVNULL, stdout=self._log, stderr=subprocess.STDOUT, env=environ,
        )
        try:
            self._wait_and_create_bucket()
        except BaseException:
            self.stop()
            raise

    def _wait_and_create_bucket(self) -> None:
        assert self.process is not None
        deadline = time.monotonic() + self.startup_timeout
        while True:
            if self.process.poll() is not None:
                raise RuntimeError(f"the S3 server exited with status {self.process.returncode}"
                                   f":\n{self.log_tail()}")
            request = urllib.request.Request(  # noqa: S310 - our own http:// endpoint
                f"{self.endpoint}/{self.bucket}", method="PUT")
            try:
                with urllib.request.urlopen(request, timeout=5) as response:  # noqa: S310
                    if response.status == 200:
                        return
            except urllib.error.HTTPError as exc:
                exc.close()
                if exc.code == 409:  # BucketAlreadyOwnedByYou: it is there
                    return
            except OSError:
                pass
            if time.monotonic() > deadline:
                raise RuntimeError(f"the S3 server did not answer within "
                                   f"{self.startup_timeout:g} s:\n{self.log_tail()}")
            time.sleep(0.1)

    def log_tail(self, size: int = 2000) -> str:
        """The end of the server's output."""
        if self._log is None:
            return "(no log)"
        self._log.flush()
        self._log.seek(0)
        return self._log.read()[-size:].decode("utf-8", errors="replace") or "(empty log)"

    def stop(self) -> None:
        """Stop the server and delete its log."""
        process, self.process = self.process, None
        if process is not None and process.poll() is None:
            process.terminate()
            try:
                process.wait(SHUTDOWN_TIMEOUT)
            except subprocess.TimeoutExpired:
                process.kill()
                process.wait(SHUTDOWN_TIMEOUT)
        if self._log is not None:
            self._log.close()
            self._log = None
