"""`tap-mailgun-webhooks` as users run it: a subprocess, killed and restarted."""

from __future__ import annotations

import os
import re
import signal
import socket
import subprocess
import textwrap
from pathlib import Path

from fakes.events import mailgun_event
from fakes.receiver_process import BIN, ReceiverProcess
from fakes.webhook_payloads import SIGNING_KEY, signature, signed_body
from mailgun_webhooks.cli import WEBHOOKS_EXTRA
from mailgun_webhooks.spool import Spool
from tests.conftest import one_line_error
from tests.webhooks.conftest import post


def test_the_receiver_refuses_to_start_without_a_signing_key(spool_path: Path) -> None:
    env = {k: v for k, v in os.environ.items() if k != "MAILGUN_WEBHOOK_SIGNING_KEY"}
    done = subprocess.run(
        [str(BIN / "tap-mailgun-webhooks"), "--spool", str(spool_path), "--port", "0"],
        env=env,
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert done.returncode != 0
    assert "MAILGUN_WEBHOOK_SIGNING_KEY" in done.stderr
    assert not spool_path.exists()


# Loaded by the interpreter at start-up (from PYTHONPATH): starlette and uvicorn look absent, as
# in a venv installed without the webhooks extra, without building one.
WITHOUT_THE_EXTRA = """
import importlib.abc, sys

class Absent(importlib.abc.MetaPathFinder):
    def find_spec(self, name, path=None, target=None):
        if name.split(".")[0] in {"starlette", "uvicorn"}:
            raise ModuleNotFoundError(f"No module named {name!r}", name=name)
        return None

sys.meta_path.insert(0, Absent())
"""


def test_without_the_webhooks_extra_one_line_names_the_extra(
    spool_path: Path, tmp_path: Path
) -> None:
    (tmp_path / "sitecustomize.py").write_text(textwrap.dedent(WITHOUT_THE_EXTRA))
    env = {**os.environ, "PYTHONPATH": str(tmp_path), "MAILGUN_WEBHOOK_SIGNING_KEY": SIGNING_KEY}
    script = str(BIN / "tap-mailgun-webhooks")
    done = subprocess.run(
        [script, "--spool", str(spool_path), "--port", "0"],
        env=env,
        capture_output=True,
        text=True,
        timeout=60,
    )
    line = one_line_error(done)
    assert done.returncode == 1
    assert done.stdout == ""
    assert done.stderr.splitlines() == [line]  # the one line is all it says
    assert re.match(r"tap-mailgun-webhooks: (starlette|uvicorn) is not installed", line)
    assert f"install '{WEBHOOKS_EXTRA}'" in line
    assert WEBHOOKS_EXTRA == "mailgun-brevo-singer[webhooks]"
    assert not spool_path.exists()
    # --help needs no server.
    usage = subprocess.run([script, "--help"], env=env, capture_output=True, text=True, timeout=60)
    assert usage.returncode == 0
    assert "--spool" in usage.stdout


def test_every_200_survives_a_kill_and_tokens_stay_spent(spool_path: Path) -> None:
    first = ReceiverProcess(spool_path)
    events = [mailgun_event("delivered", recipient=f"k{i}@example.org") for i in range(20)]
    signatures = [signature() for _ in events]
    bodies = [
        signed_body(event, timestamp=int(sig["timestamp"]), token=sig["token"])
        for event, sig in zip(events, signatures, strict=True)
    ]
    for body in bodies:
        assert post(first.url, body).status_code == 200
    assert first.stop(signal.SIGKILL) == -signal.SIGKILL  # no graceful shutdown

    second = ReceiverProcess(spool_path)
    try:
        with Spool(spool_path) as spool:
            assert spool.event_keys() == [(e["id"], e["timestamp"]) for e in events]
        # The token store is in the spool: a replay after the restart is still refused...
        replay = signed_body(mailgun_event(), token=signatures[0]["token"])
        assert post(second.url, replay).status_code == 401
        # ...while Mailgun's retry of a call whose 200 was lost, signature and all, is welcome.
        assert post(second.url, bodies[0]).json() == {"message": "duplicate"}
        assert post(second.url, signed_body(events[1])).json() == {"message": "duplicate"}
    finally:
        # SIGTERM: uvicorn shuts the app down (the spool writer drains), then re-raises it.
        assert second.stop() == -signal.SIGTERM
    assert "Application shutdown complete" in second.output()
    logs = first.output() + second.output()
    assert "listening on" in logs
    assert SIGNING_KEY not in logs


def test_the_signing_key_can_come_from_a_file(spool_path: Path, tmp_path: Path) -> None:
    key_file = tmp_path / "signing-key"
    key_file.write_text("file-held-key\n")
    env = {"MAILGUN_WEBHOOK_SIGNING_KEY": ""}
    proc = subprocess.Popen(
        [
            str(BIN / "tap-mailgun-webhooks"),
            "--spool",
            str(spool_path),
            "--port",
            "0",
            "--signing-key-file",
            str(key_file),
        ],
        env={**os.environ, **env},
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
    )
    try:
        assert proc.stdout is not None
        line = proc.stdout.readline()
        url = line.split("listening on ", 1)[1].split(",", 1)[0]
        ok = post(url, signed_body(mailgun_event(), key="file-held-key"))
        assert ok.status_code == 200
        assert post(url, signed_body(mailgun_event())).status_code == 401
    finally:
        proc.terminate()
        proc.wait(timeout=30)


def test_a_spool_that_cannot_be_written_or_a_taken_port_ends_in_one_line(
    spool_path: Path,
) -> None:
    def receiver(*args: str) -> subprocess.CompletedProcess[str]:
        return subprocess.run(
            [str(BIN / "tap-mailgun-webhooks"), *args],
            env={**os.environ, "MAILGUN_WEBHOOK_SIGNING_KEY": SIGNING_KEY},
            capture_output=True,
            text=True,
            timeout=60,
        )

    # /proc refuses new files even to root, whom file modes would not stop.
    unwritable = receiver("--spool", "/proc/spool.sqlite", "--port", "0")
    assert one_line_error(unwritable) == (
        "tap-mailgun-webhooks: cannot open the webhook spool /proc/spool.sqlite: unable to open "
        "database file; pass --spool a file in a folder the receiver can write (tap-mailgun's "
        "webhook_spool_path names the same file)"
    )
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        busy = receiver("--spool", str(spool_path), "--port", str(port))
    assert one_line_error(busy) == (
        f"tap-mailgun-webhooks: cannot listen on 127.0.0.1:{port} (Address already in use); "
        "another program listens there: stop it, or pass a free --port (and point the HTTPS "
        "proxy at it)"
    )
    missing_key = receiver("--spool", str(spool_path), "--signing-key-file", "/no/such/key")
    assert one_line_error(missing_key) == (
        "tap-mailgun-webhooks: cannot read --signing-key-file: [Errno 2] No such file or "
        "directory: '/no/such/key'"
    )
