"""`tap-mailgun-webhooks`: the console script that runs the receiver under uvicorn.

`tap-mailgun-webhooks --spool ...` serves (what meltano.yml's `serve` command runs);
`tap-mailgun-webhooks register --url ...` registers the receiver's URL in Mailgun
(register.py).

The server stack (Starlette, uvicorn) is the `webhooks` extra: serving imports it only when it
starts, so an install without the extra ends in one line that names the extra to install.
"""

from __future__ import annotations

import argparse
import errno
import logging
import socket
import sys
from collections.abc import Sequence
from pathlib import Path
from typing import NoReturn

from mailgun_webhooks.spool import SpoolError, SpoolWriter
from mailgun_webhooks.verify import DEFAULT_MAX_AGE_S, DEFAULT_MAX_BODY_BYTES
from plugin_cli import SettingError, secret

SIGNING_KEY_ENV = "MAILGUN_WEBHOOK_SIGNING_KEY"
# What brings the server stack; pip and Meltano's pip_url both take this form.
WEBHOOKS_EXTRA = "mailgun-brevo-singer[webhooks]"

logger = logging.getLogger("mailgun_webhooks")


def _arguments(argv: Sequence[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        prog="tap-mailgun-webhooks",
        description="Receive Mailgun webhooks, verify them and spool them for tap-mailgun "
        "(stream webhook_events, setting webhook_spool_path).",
        epilog="To register the receiver's URL on every domain of the Mailgun account: "
        "tap-mailgun-webhooks register --url URL [--dry-run] (see register --help).",
    )
    parser.add_argument("--host", default="127.0.0.1", help="address to listen on")
    parser.add_argument("--port", type=int, default=8080, help="port (0: any free port)")
    parser.add_argument(
        "--spool",
        required=True,
        help="the spool: a SQLite file, or a postgresql:// URL shared by several receivers",
    )
    parser.add_argument(
        "--max-age",
        type=int,
        default=DEFAULT_MAX_AGE_S,
        help="refuse signatures whose timestamp is further than this from now (seconds; the "
        "default covers Mailgun's 8 hours of retries, which may resend the original signature)",
    )
    parser.add_argument(
        "--max-body-bytes", type=int, default=DEFAULT_MAX_BODY_BYTES, help="413 above this size"
    )
    parser.add_argument(
        "--signing-key-file",
        type=Path,
        help=f"file holding the webhook signing key (default: ${SIGNING_KEY_ENV})",
    )
    parser.add_argument("--log-level", default="info", choices=["debug", "info", "warning"])
    parser.add_argument("--access-log", action="store_true", help="log every request line")
    return parser.parse_args(argv)


def _signing_key(args: argparse.Namespace) -> bytes:
    try:
        key = secret(args.signing_key_file, SIGNING_KEY_ENV, "--signing-key-file")
    except SettingError as exc:
        raise SystemExit(f"tap-mailgun-webhooks: {exc}") from None
    if not key:
        raise SystemExit(
            f"tap-mailgun-webhooks: no signing key. Set {SIGNING_KEY_ENV} (Mailgun: Sending > "
            "Webhooks > HTTP webhook signing key) or pass --signing-key-file; "
            "the receiver does not start unverified."
        )
    return key.encode()


def _listen(host: str, port: int) -> socket.socket:
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    # IPPROTO_TCP explicitly: asyncio sets TCP_NODELAY only on sockets that name it, and
    # without it every answer waits ~40 ms for the client's delayed ACK (Nagle).
    sock = socket.socket(family, socket.SOCK_STREAM, socket.IPPROTO_TCP)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    try:
        sock.bind((host, port))
    except OSError as exc:
        sock.close()
        fix = (
            "another program listens there: stop it, or pass a free --port (and point the "
            "HTTPS proxy at it)"
            if exc.errno == errno.EADDRINUSE
            else "pass a --host this machine has (127.0.0.1 behind a proxy)"
        )
        raise SystemExit(
            f"tap-mailgun-webhooks: cannot listen on {host}:{port} ({exc.strerror}); {fix}"
        ) from None
    sock.listen(2048)
    return sock


def _register(argv: Sequence[str]) -> NoReturn:
    from mailgun_webhooks import register  # imported here: serving never needs the tap's client

    logging.basicConfig(level="INFO", format="%(levelname)s %(message)s")
    try:
        code = register.run(argv)
    except register.RegisterError as exc:
        raise SystemExit(f"tap-mailgun-webhooks register: {exc}") from None
    raise SystemExit(code)


def main(argv: Sequence[str] | None = None) -> None:
    """Run the receiver until SIGINT/SIGTERM (pending writes are committed before exit), or
    the `register` subcommand."""
    argv = sys.argv[1:] if argv is None else list(argv)
    if argv[:1] == ["register"]:
        _register(argv[1:])
    args = _arguments(argv)
    try:
        import uvicorn

        from mailgun_webhooks.app import WEBHOOK_PATH, ReceiverSettings, create_app
    except ModuleNotFoundError as exc:
        raise SystemExit(
            f"tap-mailgun-webhooks: {exc.name} is not installed: the receiver needs the webhooks "
            f"extra; install '{WEBHOOKS_EXTRA}' (in Meltano: the pip_url of "
            "plugins/utilities/tap-mailgun-webhooks.yml)"
        ) from None
    logging.basicConfig(
        level=args.log_level.upper(), format="%(asctime)s %(levelname)s %(name)s %(message)s"
    )
    settings = ReceiverSettings(_signing_key(args), args.max_age, args.max_body_bytes)
    try:
        writer = SpoolWriter(args.spool, token_ttl_s=args.max_age + 60)
    except SpoolError as exc:
        raise SystemExit(
            f"tap-mailgun-webhooks: {exc}; pass --spool a file in a folder the receiver can "
            "write (tap-mailgun's webhook_spool_path names the same file)"
        ) from None
    sock = _listen(args.host, args.port)
    host, port = sock.getsockname()[:2]
    logger.info("listening on http://%s:%s%s, spool %s", host, port, WEBHOOK_PATH, writer.location)
    config = uvicorn.Config(
        create_app(settings, writer),
        log_level=args.log_level,
        access_log=args.access_log,
        timeout_graceful_shutdown=10,
    )
    uvicorn.Server(config).run(sockets=[sock])
