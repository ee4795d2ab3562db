"""`tap-mailgun-webhooks` run as a subprocess, the way users run it (tests and the benchmark)."""

from __future__ import annotations

import os
import re
import subprocess
import sys
import time
from collections.abc import Sequence
from pathlib import Path

import requests

from fakes.webhook_payloads import SIGNING_KEY
from mailgun_webhooks.app import WEBHOOK_PATH

BIN = Path(sys.executable).parent


class ReceiverProcess:
    """The real console script on 127.0.0.1; returns once /healthz answers 200."""

    def __init__(
        self,
        spool: Path | str,
        *,
        port: int = 0,
        key: str = SIGNING_KEY,
        args: Sequence[str] = (),
        log_dir: Path | None = None,
    ) -> None:
        """`spool`: a SQLite file or a postgresql:// URL; the log goes to `log_dir`, by default
        the SQLite file's folder."""
        self.spool = spool
        if log_dir is None:
            if not isinstance(spool, Path):
                raise ValueError("a receiver on a database spool needs a log_dir")
            log_dir = spool.parent
        log_dir.mkdir(parents=True, exist_ok=True)
        self.log = log_dir / f"receiver-{time.monotonic_ns()}.log"
        environ = {**os.environ, "MAILGUN_WEBHOOK_SIGNING_KEY": key}
        argv = [str(BIN / "tap-mailgun-webhooks"), "--spool", str(spool), "--port", str(port)]
        with self.log.open("wb") as log:
            self.proc = subprocess.Popen(
                [*argv, *args], stdout=log, stderr=subprocess.STDOUT, env=environ
            )
        self.base_url = self._wait_listening()
        self.port = int(self.base_url.rsplit(":", 1)[1])
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
        self.proc.kill()
        raise RuntimeError(f"tap-mailgun-webhooks did not start:\n{self.output()}")

    def stop(self, sig: int | None = None) -> int:
        """Stop with `sig` (default SIGTERM) and return the exit code."""
        if self.proc.poll() is None:
            if sig is None:
                self.proc.terminate()
            else:
                self.proc.send_signal(sig)
        return self.proc.wait(timeout=30)
