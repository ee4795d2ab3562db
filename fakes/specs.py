"""The official API specs, loaded once per process, and a validator for recorded requests.

Every request a fake receives is checked against the vendor's OpenAPI document, so a test
whose code sends something the real API would reject fails, even where the fake is lenient.
"""

from __future__ import annotations

import functools
import os
import pickle
from pathlib import Path
from typing import TYPE_CHECKING, Any
from urllib.parse import urlsplit

import yaml
from openapi_core import OpenAPI
from openapi_core.datatypes import RequestParameters
from werkzeug.datastructures import Headers, ImmutableMultiDict

if TYPE_CHECKING:
    from werkzeug.wrappers import Request

ROOT = Path(__file__).resolve().parents[1]
SPECS_DIR = Path(os.environ.get("API_SPECS_DIR", ROOT / "specs"))
MAILGUN_SPEC = "mailgun-openapi.yaml"
BREVO_SPEC = "brevo-openapi.yaml"
_CACHE_DIR = ROOT / ".pytest_cache" / "specs"


def _spec_dict(name: str) -> dict[str, Any]:
    """Parse a spec file; the parsed form is cached on disk keyed by the file's mtime and size."""
    path = SPECS_DIR / name
    if not path.exists():
        raise FileNotFoundError(
            f"API spec {path} not found; set API_SPECS_DIR to the folder holding {name}"
        )
    stat = path.stat()
    cached = _CACHE_DIR / f"{name}.{stat.st_mtime_ns}.{stat.st_size}.pickle"
    if cached.exists():
        with cached.open("rb") as fh:
            loaded: dict[str, Any] = pickle.load(fh)  # noqa: S301 - our own cache file
            return loaded
    with path.open() as fh:
        # The C-accelerated safe loader when libyaml is there: a safe load either way.
        loader = getattr(yaml, "CSafeLoader", yaml.SafeLoader)
        data: dict[str, Any] = yaml.load(fh, Loader=loader)  # noqa: S506
    _CACHE_DIR.mkdir(parents=True, exist_ok=True)
    with cached.open("wb") as fh:
        pickle.dump(data, fh)
    return data


@functools.cache
def openapi(name: str) -> OpenAPI:
    """The OpenAPI object for one spec file, built once per process."""
    return OpenAPI.from_dict(_spec_dict(name))


class _SpecRequest:
    """A recorded werkzeug request presented to openapi-core as if sent to the vendor's host."""

    def __init__(self, request: Request, server_url: str) -> None:
        parts = urlsplit(server_url)
        self.host_url = f"{parts.scheme}://{parts.netloc}"
        self.path = request.path
        self.method = request.method.lower()
        self.body = request.get_data(cache=True)
        self.content_type = request.content_type or "application/octet-stream"
        self.parameters = RequestParameters(
            query=ImmutableMultiDict(request.args),
            header=Headers(request.headers),
            cookie=request.cookies,
        )


class SpecValidator:
    """Validates requests against one vendor spec; `check` returns an error text or None."""

    def __init__(self, spec_name: str) -> None:
        self.spec_name = spec_name
        self._openapi = openapi(spec_name)
        servers = self._openapi.spec / "servers"
        self.server_url: str = next(iter(servers))["url"]

    def check(self, request: Request) -> str | None:
        """Validate one request; None when the spec accepts it."""
        try:
            self._openapi.validate_request(_SpecRequest(request, self.server_url))
        except Exception as exc:  # openapi-core raises a family of errors; all mean "rejected"
            details = "; ".join(str(e) for e in getattr(exc, "schema_errors", []) or [])
            cause = f" ({exc.__cause__})" if exc.__cause__ else ""
            return f"{request.method} {request.full_path}: {exc}{cause} {details}".strip()
        return None
