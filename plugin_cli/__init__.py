"""What the command lines of tap-mailgun and target-brevo share: checks of what a user typed.

- `SettingError`: a setting that cannot work; its message names the setting and what to do.
- `check_config_files`: each --config file is JSON, or the error names the file and the line;
  `CheckedConfigFiles` runs it as the tap's and the target's --config is read.
- `check_base_url`: an http(s) URL with a host and no whitespace, before any request is sent.
- `data_path` and `database_url`: where a plugin keeps its SQLite file unless told otherwise,
  and a path-or-URL setting (`engagement_store`, `validation_cache`) as an SQLAlchemy URL.
- `secret`: a key from the file a flag names, else from an environment variable.
- `unresolved_host`: a request failed because its host name does not exist in DNS: retrying
  would fail the same way, so callers stop at once instead.
- `one_line_errors`: the listed errors end the command in one line (click's `Error: ...`,
  exit 1); their traceback goes to the debug log. `error_line` is that line; for settings
  that fail the plugin's schema (singer-sdk's ConfigValidationError) it names each one.
"""

from __future__ import annotations

import json
import logging
import os
import socket
from collections.abc import Iterable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import click
from singer_sdk.exceptions import ConfigValidationError
from singer_sdk.plugin_base import PluginBase
from typing_extensions import override

# getaddrinfo's answers for a name that does not exist; EAI_AGAIN (a DNS server that did not
# answer in time) is not among them: a retry may well succeed.
_NO_SUCH_NAME = frozenset(
    code for code in (socket.EAI_NONAME, getattr(socket, "EAI_NODATA", None)) if code is not None
)


class SettingError(ValueError):
    """A setting that cannot work; the message names it and says what to do."""


def check_config_files(paths: Iterable[str]) -> None:
    """Raise click's one-line error for a --config file that is missing or not a JSON object."""
    for name in paths:
        if name == "ENV":  # the SDK's marker for "settings from the environment"
            continue
        path = Path(name)
        try:
            value = json.loads(path.read_text(encoding="utf-8"))
        except OSError as exc:
            raise click.ClickException(
                f"--config {name}: cannot read it ({exc.strerror}); pass the path of the "
                "JSON settings file"
            ) from None
        except json.JSONDecodeError as exc:
            raise click.ClickException(
                f"--config {name} is not JSON: line {exc.lineno} column {exc.colno}: {exc.msg}; "
                "fix that line (JSON wants double quotes and no trailing commas)"
            ) from None
        if not isinstance(value, dict):
            raise click.ClickException(
                f"--config {name} holds a JSON {type(value).__name__}, not an object of "
                'settings; write it as {"setting": value, ...}'
            )


class CheckedConfigFiles(PluginBase):
    """Mixed in before singer-sdk's Tap or Target: a --config file that is missing or not a
    JSON object ends the command in one line that names it, before the SDK reads it."""

    @classmethod
    @override
    def cb_config(cls, ctx: click.Context, param: click.Option, value: tuple[str, ...]) -> Any:
        """The SDK's --config, after a check that names a file that is not JSON."""
        check_config_files(value)
        return super().cb_config(ctx, param, value)


def check_base_url(setting: str, value: str, example: str) -> None:
    """Raise SettingError unless `value` is an http(s) URL with a host and no whitespace."""
    if any(char.isspace() for char in value):
        raise SettingError(
            f"{setting} {value!r} contains a space or line break; remove it (e.g. {example})"
        )
    parts = urlsplit(value)
    if parts.scheme not in ("http", "https") or not parts.hostname:
        raise SettingError(
            f"{setting} {value!r} is not an http(s) URL; write it with its scheme, e.g. {example}"
        )


def data_path(plugin: str, filename: str) -> Path:
    """Where `plugin` keeps `filename` unless a setting names another place.

    Under Meltano, inside the project (two projects never share it); elsewhere in the user's
    data directory.
    """
    project = os.environ.get("MELTANO_PROJECT_ROOT")
    if project:
        return Path(project) / ".meltano" / plugin / filename
    data_home = os.environ.get("XDG_DATA_HOME") or Path.home() / ".local" / "share"
    return Path(data_home) / plugin / filename


def database_url(setting: str, value: str | None, default: Path) -> str:
    """The setting named `setting` (a path or an SQLAlchemy URL; unset: `default`) as a URL.

    A URL is used as is, except that a plain libpq URL (`postgresql://` or `postgres://`, as
    Meltano's state backend and the webhook spool take it) means psycopg 3, the driver of the
    `postgres` extra: SQLAlchemy alone would look for psycopg2. A URL naming its driver
    (`postgresql+…://`) is kept. A path means SQLite.

    A path's folder must exist: a typo must not start an empty database beside the real one.
    The default's folder is created.
    """
    if value and "://" in value:
        scheme, rest = value.split("://", 1)
        return f"postgresql+psycopg://{rest}" if scheme in ("postgresql", "postgres") else value
    path = Path(value).expanduser() if value else default
    folder = path.parent
    if value and not folder.is_dir():
        raise SettingError(
            f"{setting}: the folder {folder} does not exist; create it "
            f"(mkdir -p {folder}) or correct the path"
        )
    try:
        folder.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise SettingError(
            f"{setting} is not set and its default folder {folder} cannot be created "
            f"({exc.strerror}); set {setting} to a file in a folder the plugin can write"
        ) from None
    return f"sqlite:///{path.resolve()}"


def secret(file: Path | None, env: str, flag: str) -> str:
    """The secret in `file` (given as `flag`) when there is one, else in the environment
    variable `env`; stripped, "" when neither holds one. A file that cannot be read is a
    SettingError naming the flag."""
    if file is None:
        return os.environ.get(env, "").strip()
    try:
        return file.read_text().strip()
    except OSError as exc:
        raise SettingError(f"cannot read {flag}: {exc}") from None


def unresolved_host(error: BaseException) -> str | None:
    """The host whose name does not exist in DNS, when that is why `error` (a requests
    connection error) happened; else None.

    requests wraps urllib3's NameResolutionError, which wraps socket.gaierror; the chain is
    walked through public attributes so that urllib3 need not be imported.
    """
    pending: list[object] = [error]
    seen: set[int] = set()
    while pending:
        current = pending.pop()
        if not isinstance(current, BaseException) or id(current) in seen:
            continue
        seen.add(id(current))
        if isinstance(current, socket.gaierror) and current.errno in _NO_SUCH_NAME:
            url = getattr(getattr(error, "request", None), "url", None)
            return urlsplit(url).hostname if isinstance(url, str) else "the host"
        pending += [*current.args, getattr(current, "reason", None), current.__cause__]
    return None


def error_line(error: Exception) -> str:
    """What a user reads of `error`: its message; for settings that do not fit the plugin's
    schema, each failure (it names the setting) instead of the SDK's "Config validation
    failed", and what to do."""
    if isinstance(error, ConfigValidationError) and error.errors:
        return (
            f"{'; '.join(error.errors)}: correct the setting (--about lists each setting, its "
            "type and its bounds)"
        )
    return str(error)


@contextmanager
def one_line_errors(logger: logging.Logger, *kinds: type[Exception]) -> Iterator[None]:
    """Errors of `kinds` end the command with their `error_line` (exit 1)."""
    try:
        yield
    except kinds as error:
        logger.debug("Stopped on this error:", exc_info=True)
        raise click.ClickException(error_line(error)) from None
