"""Mailgun webhooks: a verifying receiver that spools what Mailgun pushes, for tap-mailgun.

- verify.py: signature, freshness and payload checks (pure functions);
- app.py: the ASGI app (Starlette), answering Mailgun;
- cli.py: the `tap-mailgun-webhooks` console script (uvicorn);
- spool.py: the spool format and its writer (standard library only), which tap-mailgun's
  `webhook_events` stream reads.

Only app.py and cli.py need the `webhooks` extra (starlette, uvicorn).
"""
