"""GET /v4/address/validate, with the tap's conventions: region or base_url, basic auth
`api:<key>`, retries of 429, 5xx and connection errors with the tap's backoff (its
`retry_wait_seconds`: the server's Retry-After, else exponential with equal jitter), a 60 s
timeout.

A refused key stops the run (every call would fail). Anything else that outlasts the retries
is `ValidationUnavailable`: the mapper then passes records through unvalidated.
"""

from __future__ import annotations

import time
from http import HTTPStatus
from typing import Any

import msgspec
import requests

from tap_mailgun.client import (
    DEFAULT_MAX_RETRIES,
    REQUEST_TIMEOUT_SECONDS,
    resolve_base_url,
    retry_wait_seconds,
    where,
)

VALIDATE_PATH = "/v4/address/validate"


class ValidationRefusedError(Exception):
    """Mailgun refused the API key: no validation can succeed in this run."""


class ValidationUnavailableError(Exception):
    """Mailgun did not answer a validation, retries included (outage, throttling, a proxy)."""


class ValidationRejectedError(Exception):
    """Mailgun answered 4xx for this one address (e.g. not an address at all)."""


class ValidationClient:
    """One session to Mailgun's validation endpoint."""

    def __init__(self, config: dict[str, Any]) -> None:
        """`config` holds api_key, region or base_url, max_retries."""
        self.config = config
        self.url = resolve_base_url(config) + VALIDATE_PATH
        self.max_retries = int(config.get("max_retries", DEFAULT_MAX_RETRIES))
        self.session = requests.Session()
        self.session.auth = ("api", str(config["api_key"]))
        self.session.headers["Accept"] = "application/json"

    def validate(self, address: str) -> dict[str, Any]:
        """Mailgun's answer for `address` (one billed validation)."""
        failure = "no answer"
        for attempt in range(self.max_retries + 1):
            response: requests.Response | None = None
            try:
                response = self.session.get(
                    self.url,
                    params={"address": address, "provider_lookup": "true"},
                    timeout=REQUEST_TIMEOUT_SECONDS,
                )
            except requests.RequestException as exc:
                failure = type(exc).__name__
            else:
                answer = self._answer(response)
                if answer is not None:
                    return answer
                failure = f"{response.status_code} {response.reason}"
            if attempt < self.max_retries:
                time.sleep(retry_wait_seconds(attempt, response))
        raise ValidationUnavailableError(
            f"Mailgun's validation at {where(self.config)} failed {self.max_retries + 1} "
            f"times ({failure})"
        )

    def _answer(self, response: requests.Response) -> dict[str, Any] | None:
        """The answer's body; None when the call should be retried."""
        status = response.status_code
        if status == HTTPStatus.UNAUTHORIZED:
            raise ValidationRefusedError(
                f"Mailgun refused the API key (401) at {where(self.config)}. Check api_key "
                "(MAILGUN_API_KEY) and region; validation needs a key of the account."
            )
        if status == HTTPStatus.TOO_MANY_REQUESTS or status >= HTTPStatus.INTERNAL_SERVER_ERROR:
            return None
        if status >= HTTPStatus.BAD_REQUEST:
            raise ValidationRejectedError(f"{status} {response.text[:200]}")
        try:
            body = msgspec.json.decode(response.content)
        except msgspec.DecodeError:
            return None  # a 200 cut short or a proxy's HTML page: retried like a 5xx
        return body if isinstance(body, dict) else None
