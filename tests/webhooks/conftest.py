"""Fixtures for the webhook tests: the receiver served on loopback, in-process or as a CLI."""

from __future__ import annotations

import os
import re
import socket
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
import requests
import uvicorn

from tap_mailgun.webhooks.receiver import WEBHOOK_PATH, ReceiverSettings, create_app
from tap_mailgun.webhooks.spool import SpoolWriter
from tests.webhooks.payloads import SIGNING_KEY

BIN = Path(sys.executable).parent


class RunningReceiver:
    """The receiver's ASGI app served by uvicorn on 127.0.0.1 in a thread (real HTTP)."""

    def __init__(self, spool: Path, *, busy_timeout_s: float = 5.0, **settings: Any) -> None:
        settings.setdefault("signing_key", SIGNING_KEY.encode())
        self.settings = ReceiverSettings(**settings)
        self.writer = SpoolWriter(
            spool, token_ttl_s=self.settings.max_age_s + 60, busy_timeout_s=busy_timeout_s
        )
        self._sock = socket.socket()
        self._sock.bind(("127.0.0.1", 0))
        self._sock.listen(128)
        config = uvicorn.Config(
            create_app(self.settings, self.writer), log_level="warning", access_log=False
        )
        self.server = uvicorn.Server(config)
        self._thread = threading.Thread(
            target=self.server.run, kwargs={"sockets": [self._sock]}, daemon=True
        )
        self.base_url = f"http://127.0.0.1:{self._sock.getsockname()[1]}"
        self.url = self.base_url + WEBHOOK_PATH

    def start(self) -> RunningReceiver:
        """Serve until `stop`; returns once the app has started."""
        self._thread.start()
        while not self.server.started:
            if not self._thread.is_alive():
                raise RuntimeError("the receiver did not start")
            time.sleep(0.01)
        return self

    def stop(self) -> None:
        """Shut down (the app's lifespan commits and closes the spool)."""
        self.server.should_exit = True
        self._thread.join(timeout=10)
        self._sock.close()


@pytest.fixture
def spool_path(tmp_path: Path) -> Path:
    """Where this test's spool lives."""
    return tmp_path / "spool" / "webhooks.sqlite"


@pytest.fixture
def start_receiver(spool_path: Path) -> Iterator[Callable[..., RunningReceiver]]:
    """Start in-process receivers on `spool_path` (settings as keyword arguments)."""
    running: list[RunningReceiver] = []

    def start(**settings: Any) -> RunningReceiver:
        receiver = RunningReceiver(spool_path, **settings).start()
        running.append(receiver)
        return receiver

    yield start
    for receiver in running:
        receiver.stop()


@pytest.fixture
def receiver(start_receiver: Callable[..., RunningReceiver]) -> RunningReceiver:
    """A receiver with default settings and the tests' signing key."""
    return start_receiver()


def post(url: str, body: bytes, content_type: str = "application/json") -> requests.Response:
    """POST a webhook body as Mailgun does."""
    return requests.post(url, data=body, headers={"Content-Type": content_type}, timeout=30)


class ReceiverProcess:
    """`tap-mailgun-webhooks` run as a subprocess, the way users run it."""

    def __init__(self, spool: Path, *, env: dict[str, str] | None = None, port: int = 0) -> None:
        self.spool = spool
        self.log = spool.parent / f"receiver-{time.monotonic_ns()}.log"
        spool.parent.mkdir(parents=True, exist_ok=True)
        environ = {**os.environ, "MAILGUN_WEBHOOK_SIGNING_KEY": SIGNING_KEY, **(env or {})}
        with self.log.open("wb") as log:
            self.proc = subprocess.Popen(
                [str(BIN / "tap-mailgun-webhooks"), "--spool", str(spool), "--port", str(port)],
                stdout=log,
                stderr=subprocess.STDOUT,
                env=environ,
            )
        self.base_url = self._wait_listening()
        self.url = self.base_url + WEBHOOK_PATH

    def output(self) -> str:
        """Everything the process logged so far."""
        return self.log.read_text()

    def _wait_listening(self) -> str:
        deadline = time.monotonic() + 30
        while time.monotonic() < deadline:
            found = re.search(r"listening on (http://[\d.]+:\d+)", self.output())
            if found:
                url = found.group(1)
                try:
                    if requests.get(url + "/healthz", timeout=5).status_code == 200:
                        return url
                except requests.ConnectionError:
                    pass
            if self.proc.poll() is not None:
                raise RuntimeError(f"tap-mailgun-webhooks exited:\n{self.output()}")
            time.sleep(0.05)
        raise RuntimeError(f"tap-mailgun-webhooks did not start:\n{self.output()}")

    def stop(self, sig: int | None = None) -> int:
        """Stop with `sig` (default SIGTERM) and return the exit code."""
        if self.proc.poll() is None:
            if sig is None:
                self.proc.terminate()
            else:
                self.proc.send_signal(sig)
        return self.proc.wait(timeout=30)
