"""Mailgun webhooks: a verifying receiver, a durable spool, and the `webhook_events` stream.

`tap-mailgun-webhooks` (receiver.py) verifies and spools what Mailgun pushes; the tap reads the
spool (stream.py) when its `webhook_spool_path` setting is set. spool.py owns the file.
"""
