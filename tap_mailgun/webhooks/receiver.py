"""`tap-mailgun-webhooks`: the receiver Mailgun posts events to, spooling them for the tap.

POST /webhooks/mailgun takes Mailgun's JSON body (`signature` + `event-data`), verifies it as
Mailgun documents (HMAC-SHA256 of timestamp + token keyed with the webhook signing key,
compared in constant time), refuses stale timestamps and replayed tokens, and answers 200 only
once the event is committed to the spool. GET /healthz says whether the spool writer runs.

Answers: 200 stored (or already spooled); 400 malformed body; 401 bad signature, stale
timestamp or replayed token; 413 body over --max-body-bytes; 503 spool not writable (Mailgun
retries on anything but 2xx and 406). Neither the signing key nor a rejected body is logged.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import hashlib
import hmac
import json
import logging
import math
import os
import socket
import time
from collections.abc import AsyncIterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

from starlette.applications import Starlette
from starlette.responses import JSONResponse
from starlette.routing import Route

from tap_mailgun.records import epoch_to_iso
from tap_mailgun.webhooks.spool import Delivery, Outcome, SpoolError, SpoolWriter

if TYPE_CHECKING:
    from starlette.requests import Request

WEBHOOK_PATH = "/webhooks/mailgun"
SIGNING_KEY_ENV = "MAILGUN_WEBHOOK_SIGNING_KEY"
DEFAULT_MAX_AGE_S = 900
DEFAULT_MAX_BODY_BYTES = 1024 * 1024
SPOOL_WAIT_S = 30.0

logger = logging.getLogger("tap_mailgun.webhooks")


class Rejected(Exception):
    """A webhook call refused with `status`; `reason` is safe to log and to answer."""

    def __init__(self, status: int, reason: str) -> None:
        super().__init__(reason)
        self.status = status
        self.reason = reason


# --- pure rules ------------------------------------------------------------------------------
def sign(signing_key: bytes, timestamp: str, token: str) -> str:
    """Mailgun's signature: hex HMAC-SHA256 of `timestamp + token` keyed with the signing key."""
    return hmac.new(signing_key, (timestamp + token).encode(), hashlib.sha256).hexdigest()


def signature_matches(
    signing_key: bytes, timestamp: str, token: str, signatures: list[str]
) -> bool:
    """Whether any of the given signatures is right, compared in constant time.

    Mailgun sends `signature` and, for a subaccount's domain, also `parent-signature` (signed
    with the primary account's key); either one verifies the call.
    """
    expected = sign(signing_key, timestamp, token).encode()
    return any(hmac.compare_digest(expected, s.encode()) for s in signatures)


def sending_domain(event_data: dict[str, Any]) -> str | None:
    """The Mailgun sending domain an event belongs to, lower-cased; None when unknown.

    Current webhook payloads carry `domain.name`; older ones only the envelope sender
    (`postmaster@mg.example.com`) or a Mailgun message id (`<...@mg.example.com>`).
    """
    domain = event_data.get("domain")
    if isinstance(domain, dict) and isinstance(domain.get("name"), str) and domain["name"]:
        return str(domain["name"]).lower()
    envelope = event_data.get("envelope")
    sender = envelope.get("sender") if isinstance(envelope, dict) else None
    message = event_data.get("message")
    headers = message.get("headers") if isinstance(message, dict) else None
    message_id = headers.get("message-id") if isinstance(headers, dict) else None
    for address in (sender, message_id):
        if isinstance(address, str) and "@" in address:
            return address.rsplit("@", 1)[1].strip("<> ").lower() or None
    return None


def _signature_fields(signature: dict[str, Any]) -> tuple[str, str, list[str]]:
    """(timestamp, token, signatures) of Mailgun's `signature` object, or Rejected(400)."""
    timestamp, token = signature.get("timestamp"), signature.get("token")
    if isinstance(timestamp, int) and not isinstance(timestamp, bool):
        timestamp = str(timestamp)  # the docs call it an int; Mailgun sends a string
    given = [signature.get(k) for k in ("signature", "parent-signature")]
    signatures = [s for s in given if isinstance(s, str) and s]
    if not (isinstance(timestamp, str) and timestamp.isascii() and timestamp.isdigit()):
        raise Rejected(400, "`signature.timestamp` must be epoch seconds")
    if not (isinstance(token, str) and token and signatures):
        raise Rejected(400, "`signature` needs a `token` and a `signature`")
    return timestamp, token, signatures


def parse_delivery(body: bytes, *, signing_key: bytes, max_age_s: int, now: float) -> Delivery:
    """Verify one webhook body; returns the delivery to spool.

    Raises `Rejected(400)` for a malformed body and `Rejected(401)` for a wrong signature or a
    timestamp more than `max_age_s` away from `now`. Replay is the spool's check (it keeps the
    tokens).
    """
    try:
        payload = json.loads(body)
    except (ValueError, UnicodeDecodeError):
        raise Rejected(400, "the body is not JSON; Mailgun's webhooks post JSON") from None
    if not isinstance(payload, dict):
        raise Rejected(400, "the body is not a JSON object")
    signature, event = payload.get("signature"), payload.get("event-data")
    if not isinstance(signature, dict) or not isinstance(event, dict):
        raise Rejected(400, "the body needs a `signature` object and an `event-data` object")
    timestamp, token, signatures = _signature_fields(signature)
    event_id, event_ts, event_name = event.get("id"), event.get("timestamp"), event.get("event")
    if not (isinstance(event_id, str) and event_id and isinstance(event_name, str)):
        raise Rejected(400, "`event-data` needs an `id` and an `event`")
    if isinstance(event_ts, bool) or not isinstance(event_ts, (int, float)):
        raise Rejected(400, "`event-data.timestamp` must be epoch seconds")
    if not math.isfinite(event_ts):  # NaN would not even store in SQLite
        raise Rejected(400, "`event-data.timestamp` must be epoch seconds")
    domain = sending_domain(event)
    if domain is None:
        raise Rejected(400, "cannot tell the sending domain: no domain.name nor envelope.sender")
    if not signature_matches(signing_key, timestamp, token, signatures):
        raise Rejected(401, "bad signature; check MAILGUN_WEBHOOK_SIGNING_KEY")
    if abs(now - int(timestamp)) > max_age_s:
        raise Rejected(401, f"signature timestamp more than {max_age_s} s from now; check clocks")
    return Delivery(
        token=token,
        signed_at=int(timestamp),
        event_id=event_id,
        event_timestamp=float(event_ts),
        domain=domain,
        event_data=json.dumps(event, separators=(",", ":")),
        received_at=epoch_to_iso(now),
    )


# --- the ASGI app ----------------------------------------------------------------------------
@dataclass(frozen=True)
class ReceiverSettings:
    """What the receiver needs besides its spool writer."""

    signing_key: bytes
    max_age_s: int = DEFAULT_MAX_AGE_S
    max_body_bytes: int = DEFAULT_MAX_BODY_BYTES

    def __repr__(self) -> str:  # never show the key, not even in a traceback
        return f"ReceiverSettings(max_age_s={self.max_age_s}, max_body={self.max_body_bytes})"


def _answer(status: int, message: str) -> JSONResponse:
    return JSONResponse({"message": message}, status_code=status)


async def _read_body(request: Request, limit: int) -> bytes:
    declared = request.headers.get("content-length", "")
    if declared.isdigit() and int(declared) > limit:
        raise Rejected(413, f"the body is over {limit} bytes")
    chunks: list[bytes] = []
    size = 0
    async for chunk in request.stream():
        size += len(chunk)
        if size > limit:
            raise Rejected(413, f"the body is over {limit} bytes")
        chunks.append(chunk)
    return b"".join(chunks)


def create_app(settings: ReceiverSettings, writer: SpoolWriter) -> Starlette:
    """The receiver as an ASGI app; the writer is started and stopped with the app."""

    async def receive(request: Request) -> JSONResponse:
        """POST /webhooks/mailgun: verify, spool, then answer."""
        peer = request.client.host if request.client else "?"
        try:
            body = await _read_body(request, settings.max_body_bytes)
            delivery = parse_delivery(
                body,
                signing_key=settings.signing_key,
                max_age_s=settings.max_age_s,
                now=time.time(),
            )
            future = asyncio.wrap_future(writer.submit(delivery))
            outcome = await asyncio.wait_for(future, SPOOL_WAIT_S)
        except Rejected as exc:
            logger.warning("refused a webhook call from %s: %s %s", peer, exc.status, exc.reason)
            return _answer(exc.status, exc.reason)
        except (SpoolError, TimeoutError) as exc:
            logger.error("cannot spool a webhook call, answering 503 so Mailgun retries: %s", exc)
            return _answer(503, "the spool cannot be written now; retry later")
        if outcome is Outcome.REPLAYED:
            logger.warning("refused a webhook call from %s: 401 replayed token", peer)
            return _answer(401, "this signature token was already used (replay)")
        return _answer(200, outcome.value)

    async def healthz(request: Request) -> JSONResponse:
        """GET /healthz: 200 while the spool writer runs."""
        if writer.alive:
            return JSONResponse({"status": "ok"})
        return JSONResponse({"status": "spool writer stopped"}, status_code=503)

    @contextlib.asynccontextmanager
    async def lifespan(app: Starlette) -> AsyncIterator[None]:
        """Start the writer with the server; drain and close it on shutdown."""
        if not writer.alive:
            writer.start()
        try:
            yield
        finally:
            await asyncio.to_thread(writer.stop)

    return Starlette(
        routes=[
            Route(WEBHOOK_PATH, receive, methods=["POST"]),
            Route("/healthz", healthz, methods=["GET"]),
        ],
        lifespan=lifespan,
    )


# --- the console script ----------------------------------------------------------------------
def _arguments(argv: Sequence[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        prog="tap-mailgun-webhooks",
        description="Receive Mailgun webhooks, verify them and spool them for tap-mailgun "
        "(stream webhook_events, setting webhook_spool_path).",
    )
    parser.add_argument("--host", default="127.0.0.1", help="address to listen on")
    parser.add_argument("--port", type=int, default=8080, help="port (0: any free port)")
    parser.add_argument("--spool", required=True, type=Path, help="the spool's SQLite file")
    parser.add_argument(
        "--max-age",
        type=int,
        default=DEFAULT_MAX_AGE_S,
        help="refuse signatures whose timestamp is further than this from now (seconds)",
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
    if args.signing_key_file is not None:
        try:
            key = Path(args.signing_key_file).read_text().strip()
        except OSError as exc:
            msg = f"tap-mailgun-webhooks: cannot read --signing-key-file: {exc}"
            raise SystemExit(msg) from None
    else:
        key = os.environ.get(SIGNING_KEY_ENV, "").strip()
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
        raise SystemExit(f"tap-mailgun-webhooks: cannot listen on {host}:{port}: {exc}") from None
    sock.listen(2048)
    return sock


def main(argv: Sequence[str] | None = None) -> None:
    """Run the receiver until SIGINT/SIGTERM; pending writes are committed before exit."""
    import uvicorn  # imported here: the tap itself never needs the server

    args = _arguments(argv)
    logging.basicConfig(
        level=args.log_level.upper(), format="%(asctime)s %(levelname)s %(name)s %(message)s"
    )
    settings = ReceiverSettings(_signing_key(args), args.max_age, args.max_body_bytes)
    try:
        writer = SpoolWriter(args.spool, token_ttl_s=args.max_age + 60)
    except SpoolError as exc:
        raise SystemExit(f"tap-mailgun-webhooks: {exc}") from None
    sock = _listen(args.host, args.port)
    host, port = sock.getsockname()[:2]
    logger.info("listening on http://%s:%s%s, spool %s", host, port, WEBHOOK_PATH, args.spool)
    config = uvicorn.Config(
        create_app(settings, writer),
        log_level=args.log_level,
        access_log=args.access_log,
        timeout_graceful_shutdown=10,
    )
    uvicorn.Server(config).run(sockets=[sock])
