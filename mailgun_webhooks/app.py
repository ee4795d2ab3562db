"""The receiver as an ASGI app (Starlette): POST /webhooks/mailgun and GET /healthz.

POST /webhooks/mailgun takes Mailgun's JSON body (`signature` + `event-data`), verifies it
(verify.py), and answers 200 only once the event is committed to the spool. GET /healthz says
whether the spool writer runs.

Answers: 200 stored, or already spooled (whatever the token: Mailgun retries until it gets a
200); 400 malformed body; 401 bad signature, stale timestamp, or a token already used with
another event; 413 body over the size limit; 503 spool not writable (Mailgun
retries on anything but 2xx and 406). Neither the signing key nor a rejected body is logged.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections.abc import AsyncIterator
from dataclasses import dataclass
from typing import TYPE_CHECKING

from starlette.applications import Starlette
from starlette.responses import JSONResponse
from starlette.routing import Route

from mailgun_webhooks.spool import Outcome, SpoolError, SpoolWriter
from mailgun_webhooks.verify import (
    DEFAULT_MAX_AGE_S,
    DEFAULT_MAX_BODY_BYTES,
    Rejected,
    parse_delivery,
)

if TYPE_CHECKING:
    from starlette.requests import Request

WEBHOOK_PATH = "/webhooks/mailgun"
SPOOL_WAIT_S = 30.0

logger = logging.getLogger("mailgun_webhooks")


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
            return _answer(401, "this signature token was already used with another event (replay)")
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
