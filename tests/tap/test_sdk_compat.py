"""The fence around singer-sdk internals: a changed SDK source is named, every hook is marked."""

from __future__ import annotations

import inspect
import logging
from functools import cached_property
from typing import Any

import pytest

import tap_mailgun.client
import tap_mailgun.event_logs
import tap_mailgun.sdk_compat
import tap_mailgun.streams
import tap_mailgun.tap
import tap_mailgun.webhook_events
from plugin_cli import SettingError
from tap_mailgun.client import MailgunRunError
from tap_mailgun.sdk_compat import SDK_SOURCES, SYNC_FAILED, SdkSource
from tap_mailgun.tap import TapMailgun

MODULES = (
    tap_mailgun.client,
    tap_mailgun.event_logs,
    tap_mailgun.sdk_compat,
    tap_mailgun.streams,
    tap_mailgun.tap,
    tap_mailgun.webhook_events,
)


def changed(sources: tuple[SdkSource, ...]) -> list[str]:
    """One line per source whose installed SDK code differs from what the tap was written for."""
    return [
        f"singer-sdk changed {s.module}.{s.qualname} (hash {s.current_hash()}, written against "
        f"{s.sha256}). Re-check: {s.recheck} Then set its hash in tap_mailgun/sdk_compat.py."
        for s in sources
        if s.current_hash() != s.sha256
    ]


def test_the_sdk_sources_are_those_the_tap_was_written_against() -> None:
    problems = changed(SDK_SOURCES)
    assert not problems, "\n".join(problems)


def test_a_changed_source_is_named_with_what_to_recheck() -> None:
    moved = SdkSource("singer_sdk.plugin_base", "PluginBase.print_about", "0" * 16, "Look here.")
    (problem,) = changed((moved, *SDK_SOURCES))
    assert "singer_sdk.plugin_base.PluginBase.print_about" in problem
    assert problem.endswith("Re-check: Look here. Then set its hash in tap_mailgun/sdk_compat.py.")


def test_every_source_is_listed_once_and_exists() -> None:
    names = [f"{s.module}.{s.qualname}" for s in SDK_SOURCES]
    assert len(names) == len(set(names))
    assert all(len(s.current_hash()) == 16 for s in SDK_SOURCES)


def _function(member: Any) -> Any:
    """The function behind a method, property, cached property or class method."""
    if isinstance(member, property):
        return member.fget
    if isinstance(member, cached_property):
        return member.func
    if isinstance(member, (classmethod, staticmethod)):
        return member.__func__
    return member


def _overrides() -> list[tuple[str, bool]]:
    """(class.method, marked @override) for every method of the tap that replaces an inherited
    one; constructors and class attributes that only hold data are not hooks."""
    found = []
    for module in MODULES:
        for cls in vars(module).values():
            if not inspect.isclass(cls) or cls.__module__ != module.__name__:
                continue
            for name, member in vars(cls).items():
                function = _function(member)
                if name.startswith("__") or inspect.isclass(function) or not callable(function):
                    continue
                if any(name in vars(base) for base in cls.__mro__[1:]):
                    marked = getattr(function, "__override__", False)
                    found.append((f"{cls.__name__}.{name}", marked))
    return found


def test_every_overridden_hook_is_marked_override() -> None:
    overrides = _overrides()
    assert len(overrides) > 40  # the walk sees the streams' hooks
    assert [name for name, marked in overrides if not marked] == []


@pytest.mark.parametrize("hook", ["MailgunStream.request_records", "MessageWriter.write_message"])
def test_the_walk_sees_known_hooks(hook: str) -> None:
    assert hook in dict(_overrides())


@pytest.mark.parametrize(
    ("error", "level"),
    [
        (MailgunRunError("Mailgun refused the API key"), logging.DEBUG),
        (SettingError("base_url is not a URL"), logging.DEBUG),
        (RuntimeError("a bug"), logging.ERROR),
    ],
)
def test_the_sdks_sync_failed_line_is_debug_only_for_an_error_that_ends_in_one_line(
    caplog: pytest.LogCaptureFixture, error: Exception, level: int
) -> None:
    stream = TapMailgun(config={"api_key": "key-x"}).streams["bounces"]
    caplog.set_level(logging.DEBUG)
    try:
        raise error
    except Exception:  # as Stream.sync logs it, while the error is handled
        stream.log(SYNC_FAILED, "bounces", level=logging.ERROR)
    (record,) = [r for r in caplog.records if r.msg == SYNC_FAILED]
    assert record.levelno == level
