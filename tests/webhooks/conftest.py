"""Fixtures for the webhook tests: the receiver served on loopback, in-process or as a CLI."""

from __future__ import annotations

import socket
import threading
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
import requests
import uvicorn

from fakes.webhook_payloads import SIGNING_KEY
from mailgun_webhooks.app import WEBHOOK_PATH, ReceiverSettings, create_app
from mailgun_webhooks.spool import SpoolWriter


class RunningReceiver:
    """The receiver's ASGI app served by uvicorn on 127.0.0.1 in a thread (real HTTP)."""

    def __init__(self, spool: Path, *, busy_timeout_s: float = 5.0, **settings: Any) -> None:
        settings.setdefault("signing_key", SIGNING_KEY.encode())
        self.settings = ReceiverSettings(**settings)
        self.writer = SpoolWriter(
            spool, token_ttl_s=self.settings.max_age_s + 60, busy_timeout_s=busy_timeout_s
        )
        self._sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM, socket.IPPROTO_TCP)
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
        """One more receiver, stopped at teardown."""
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
