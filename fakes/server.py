"""A small base for the fake vendor APIs: real HTTP on loopback, recorded and spec-checked.

The fakes serve the tests, the sandbox and the benchmarks from one implementation. Each fake
is a werkzeug WSGI app served by a threaded HTTP server on 127.0.0.1 in a background thread;
the code under test reaches it over real sockets, exactly as it would reach the vendor.
"""

from __future__ import annotations

import json
import re
import socket
import ssl
import threading
import time
import traceback
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass, field
from typing import Any

from werkzeug.exceptions import HTTPException, MethodNotAllowed, NotFound
from werkzeug.routing import Map, Rule
from werkzeug.serving import BaseWSGIServer, WSGIRequestHandler, make_server
from werkzeug.wrappers import Request, Response

from fakes.specs import SpecValidator

Handler = Callable[..., Response]


def json_response(
    payload: Any, status: int = 200, headers: dict[str, str] | None = None
) -> Response:
    """A JSON response, as both vendors send them."""
    return Response(
        json.dumps(payload), status=status, headers=headers, content_type="application/json"
    )


@dataclass
class Recorded:
    """One request as the fake received it."""

    method: str
    path: str
    query: dict[str, list[str]]
    headers: dict[str, str]
    body: bytes
    status: int = 0

    def json(self) -> Any:
        """The body parsed as JSON."""
        return json.loads(self.body)


@dataclass
class Fault:
    """A canned answer for the next `times` requests whose "METHOD path" matches `pattern`.

    `carried_out`: the request is handled as usual first, and only its answer is replaced, as
    when the vendor made the change and the answer was lost on the way back.
    """

    pattern: re.Pattern[str]
    status: int
    body: Any = None
    headers: dict[str, str] = field(default_factory=dict)
    times: int = 1
    carried_out: bool = False


@dataclass
class Cut:
    """The next `times` requests matching `pattern` are handled, then their answer is cut.

    `after_headers`: the status line and headers go out with the body's full length (or
    chunked), then half the body, then the connection closes; otherwise it closes before
    anything is sent. Either way the request took effect: only its answer is lost.
    """

    pattern: re.Pattern[str]
    after_headers: bool = True
    chunked: bool = False
    times: int = 1


class _CutShort(ConnectionAbortedError):
    """Raised by a cut answer's body: werkzeug's server then closes the connection as is."""


def _cut(response: Response, cut: Cut, connection: socket.socket) -> Response:
    """`response` as it would arrive over a connection that drops part way through it."""
    body = response.get_data()
    headers = [(k, v) for k, v in response.headers.items() if k.lower() != "content-length"]
    if not cut.chunked:
        headers.append(("Content-Length", str(len(body))))

    def parts() -> Iterator[bytes]:
        if cut.after_headers and body:
            yield body[: len(body) // 2]
        connection.shutdown(socket.SHUT_RDWR)  # the client sees the end of the stream now
        raise _CutShort("cut by the test")

    return Response(parts(), status=response.status_code, headers=headers)


class _QuietHandler(WSGIRequestHandler):
    """No access log: the fakes' traffic is inspected through `FakeAPI.requests`.

    HTTP/1.1 (chunked answers, as both vendors send). Keep-alive is not possible here:
    werkzeug's server sends `Connection: close` after every answer, so clients open a new
    loopback connection per request, a cost the real APIs, which keep connections alive, do
    not have.
    """

    protocol_version = "HTTP/1.1"

    def log_request(self, *args: Any, **kwargs: Any) -> None:
        pass

    def send_header(self, keyword: str, value: str) -> None:
        """One Date header: a fake that sets its own (its clock may be skewed on purpose)
        replaces the one the HTTP server adds."""
        if keyword.lower() == "date":
            buffered: list[bytes] = getattr(self, "_headers_buffer", [])
            buffered[:] = [h for h in buffered if not h.lower().startswith(b"date:")]
        super().send_header(keyword, value)


class FakeAPI:
    """Base of a fake vendor API.

    Subclasses declare `rules()` (werkzeug rules whose endpoints are method names) and
    implement the handlers. Every request is recorded in `requests`; when a spec is given,
    every request is validated against it and each rejection is kept in `violations` and
    answered with 400, so the code under test cannot pass by accident.

    `latency` (seconds, settable at any time) delays every answer, as the vendor's distance
    does: each request waits in its own server thread, so concurrent requests overlap as they
    would over a real network, and the fake's lock is not held while waiting.
    """

    spec_name: str | None = None

    def __init__(
        self,
        *,
        validate: bool = True,
        host: str = "127.0.0.1",
        port: int = 0,
        latency: float = 0.0,
    ) -> None:
        self.latency = latency
        self.url_map = Map(list(self.rules()))
        self.validator = SpecValidator(self.spec_name) if (validate and self.spec_name) else None
        self.requests: list[Recorded] = []
        self.violations: list[str] = []
        self.faults: list[Fault] = []
        self.cuts: list[Cut] = []
        self.lock = threading.RLock()
        self._validating = threading.Lock()
        self._server: BaseWSGIServer = make_server(
            host, port, self._wsgi, threaded=True, request_handler=_QuietHandler
        )
        self._thread: threading.Thread | None = None

    # --- to implement -------------------------------------------------------------------
    def rules(self) -> Iterable[Rule]:
        """The routes this fake serves."""
        raise NotImplementedError

    def authenticate(self, request: Request) -> Response | None:
        """Return an error response when the request's credentials are refused."""
        return None

    def no_such_path(self) -> Response:
        """The vendor's answer to a path it has no API at (e.g. base_url with /v3 twice)."""
        return json_response({"message": "Not Found"}, status=404)

    # --- lifecycle ----------------------------------------------------------------------
    @property
    def base_url(self) -> str:
        """The root URL of the fake, e.g. http://127.0.0.1:40123 (https once `use_tls`)."""
        host, port = self._server.server_address[:2]
        return f"{self._scheme}://{host}:{port}"

    _scheme = "http"

    def use_tls(self, cert: str, key: str) -> None:
        """Serve HTTPS with this certificate and key (PEM files); call before `start`."""
        context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
        context.load_cert_chain(cert, key)
        self._server.socket = context.wrap_socket(self._server.socket, server_side=True)
        self._scheme = "https"

    def start(self) -> FakeAPI:
        """Serve in a daemon thread; returns self."""
        # A short poll interval: stop() waits for it, and every test stops a fake.
        self._thread = threading.Thread(
            target=self._server.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True
        )
        self._thread.start()
        return self

    def stop(self) -> None:
        """Stop serving and close the socket."""
        self._server.shutdown()
        self._server.server_close()

    def __enter__(self) -> FakeAPI:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()

    # --- fault injection ----------------------------------------------------------------
    def fail_next(
        self,
        pattern: str,
        status: int,
        body: Any = None,
        headers: dict[str, str] | None = None,
        times: int = 1,
        *,
        carried_out: bool = False,
    ) -> None:
        """Answer the next `times` requests matching `pattern` ("METHOD /path" regex): `status`
        (after handling them, when `carried_out`: see `Fault`)."""
        with self.lock:
            self.faults.append(
                Fault(re.compile(pattern), status, body, headers or {}, times, carried_out)
            )

    def cut_next(
        self, pattern: str, *, after_headers: bool = True, chunked: bool = False, times: int = 1
    ) -> None:
        """Handle the next `times` requests matching `pattern`, then lose their answers (Cut)."""
        with self.lock:
            self.cuts.append(Cut(re.compile(pattern), after_headers, chunked, times))

    def _take_cut(self, key: str) -> Cut | None:
        with self.lock:
            for cut in self.cuts:
                if cut.pattern.search(key):
                    cut.times -= 1
                    if cut.times <= 0:
                        self.cuts.remove(cut)
                    return cut
        return None

    def _take_fault(self, key: str) -> Fault | None:
        with self.lock:
            for fault in self.faults:
                if fault.pattern.search(key):
                    fault.times -= 1
                    if fault.times <= 0:
                        self.faults.remove(fault)
                    return fault
        return None

    # --- inspection ---------------------------------------------------------------------
    def calls(self, method: str | None = None, path: str | None = None) -> list[Recorded]:
        """Recorded requests, optionally filtered by method and a path regex."""
        with self.lock:
            return [
                r
                for r in self.requests
                if (method is None or r.method == method)
                and (path is None or re.search(path, r.path))
            ]

    # --- WSGI ---------------------------------------------------------------------------
    def _wsgi(self, environ: dict[str, Any], start_response: Callable[..., Any]) -> Iterable[bytes]:
        if self.latency > 0:
            time.sleep(self.latency)
        request = Request(environ)
        body = request.get_data(cache=True)
        recorded = Recorded(
            request.method,
            request.path,
            {k: request.args.getlist(k) for k in request.args},
            dict(request.headers),
            body,
        )
        with self.lock:
            self.requests.append(recorded)
        try:
            response = self._respond(request, recorded)
        except Exception:  # a bug of the fake's: say where, as a violation the tests see
            with self.lock:
                self.violations.append(f"the fake failed: {traceback.format_exc()}")
            response = json_response({"message": "the fake failed"}, status=500)
        recorded.status = response.status_code
        cut = self._take_cut(f"{request.method} {request.path}")
        if cut is not None:
            response = _cut(response, cut, environ["werkzeug.socket"])
        return response(environ, start_response)

    def _respond(self, request: Request, recorded: Recorded) -> Response:
        adapter = self.url_map.bind_to_environ(request.environ)
        if not adapter.test(request.path, method=None):
            # The vendor answers 404 before anything else: no spec describes such a path,
            # so it is the code's handling of the 404 that a test checks, not a violation.
            return self.no_such_path()
        if self.validator is not None:
            with self._validating:  # the validator's caches are not made for threads
                problem = self.validator.check(request)
            if problem:
                with self.lock:
                    self.violations.append(problem)
                return json_response({"message": f"spec violation: {problem}"}, status=400)
        fault = self._take_fault(f"{request.method} {request.path}")
        if fault is not None:
            if fault.carried_out:
                self._handle(request)
            body = fault.body if fault.body is not None else {"message": "injected fault"}
            return json_response(body, fault.status, fault.headers)
        return self._handle(request)

    def _handle(self, request: Request) -> Response:
        refused = self.authenticate(request)
        if refused is not None:
            return refused
        adapter = self.url_map.bind_to_environ(request.environ)
        try:
            endpoint, args = adapter.match()
            handler: Handler = getattr(self, str(endpoint))
            with self.lock:
                return handler(request, **args)
        except NotFound:
            return self.no_such_path()
        except MethodNotAllowed:
            return json_response({"message": "Method Not Allowed"}, status=405)
        except HTTPException as exc:
            return json_response({"message": exc.description}, status=exc.code or 500)
