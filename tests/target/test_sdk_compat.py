"""target-brevo's use of singer-sdk internals is fenced: known, pinned, and in one module.

When the `singer-sdk` pin moves, a failure here names the SDK method whose source changed and
what to re-check in target_brevo (then update its hash here). No server, no Brevo.
"""

from __future__ import annotations

import ast
import hashlib
import importlib
import inspect
import pkgutil
import textwrap
from typing import Any

import pytest
from singer_sdk import Target
from singer_sdk.contrib.msgspec import MsgSpecReader
from singer_sdk.plugin_base import PluginBase
from singer_sdk.singerlib.encoding.base import GenericSingerReader
from singer_sdk.sinks import BatchSink, Sink

import target_brevo
from target_brevo import sdk_compat, sinks, target

# (SDK class, method, sha256 of its source (first 16 hex digits), what to re-check if it changed)
PINNED: list[tuple[type, str, str, str]] = [
    (Target, "_handle_termination", "0d610b822293792b",
     "sdk_compat.SignalAwareTarget replaces it by on_signal; TargetBrevo.on_signal must still "
     "do whatever the SDK's handler now does besides draining every sink"),
    (PluginBase, "_handle_termination", "d467c7407cf55b00",
     "SignalAwareTarget.on_signal's default calls it: still log and exit 0?"),
    (PluginBase, "_setup_signal_handlers", "eb4287001bdd7d19",
     "SIGINT and SIGTERM must still reach _handle_termination (and so on_signal)"),
    (Target, "_write_state_message", "bf40aa5e36ebef4d",
     "SignalAwareTarget wraps it with before_state: still the one place STATE is written?"),
    (Target, "drain_all", "1da0109210d345c4",
     "STATE must still be written after every sink is drained: the first sink write takes the "
     "run lock, and before_state brings Brevo up to date before STATE"),
    (Target, "_process_state_message", "e27158e2b1e7ea6d",
     "SignalAwareTarget wraps it with on_new_state: does it still only keep the latest STATE "
     "(in _latest_state) for the next drain?"),
    (Sink, "_parse_timestamps_in_record", "b99dc17613b2e3ac",
     "sdk_compat.RawTimestampSink skips it: does it now do more than parse timestamps?"),
    (BatchSink, "process_record", "5896c8423a344912",
     "sinks.BrevoSink replaces it (facts in self.pending, not the SDK's context records)"),
    (BatchSink, "process_batch", "a20ded37aa08d767",
     "sinks.BrevoSink and SkippedStreamSink replace it"),
    (MsgSpecReader, "deserialize_json", "eec0fe447cd2ae9e",
     "target.LineNumberReader replaces it (floats stay floats, errors name the line number)"),
    (GenericSingerReader, "process_lines", "f6d848854616d1d8",
     "target.LineNumberReader wraps it: still one deserialize_json per line, and "
     "InvalidInputLine for a bad one?"),
    (Target, "invoke", "09090ea685c4bda1",
     "TargetBrevo.invoke wraps it (GC tuning, errors to exit codes): still builds the target "
     "and listens, and nothing else to close on an error?"),
    (Target, "process_endofpipe", "cfb659b6898b0490",
     "TargetBrevo.process_endofpipe finishes the run after it: still one last drain_all?"),
]  # fmt: skip

# Classes of target_brevo that extend singer-sdk classes.
PRODUCT_CLASSES = [
    sdk_compat.SignalAwareTarget,
    sdk_compat.RawTimestampSink,
    target.TargetBrevo,
    target.LineNumberReader,
    sinks.BrevoSink,
    sinks.EventsSink,
    sinks.SuppressionSink,
    sinks.ListMemberSink,
    sinks.SkippedStreamSink,
]
# SDK names target_brevo sets on purpose without overriding a hook (class settings, a setter).
CONFIGURED = {
    "name",
    "package_name",
    "config_jsonschema",
    "message_reader_class",
    "max_parallelism",
}


def source_of(owner: type, name: str) -> str:
    """The source of a method, classmethod or property as the class defines it."""
    member: Any = owner.__dict__[name]
    member = getattr(member, "__func__", member)
    member = getattr(member, "fget", member)
    return inspect.getsource(member)


@pytest.mark.parametrize(
    ("owner", "name", "digest", "recheck"), PINNED, ids=[f"{o.__name__}.{n}" for o, n, *_ in PINNED]
)
def test_the_sdk_methods_target_brevo_replaces_or_relies_on_are_unchanged(
    owner: type, name: str, digest: str, recheck: str
) -> None:
    actual = hashlib.sha256(source_of(owner, name).encode()).hexdigest()[:16]
    assert actual == digest, (
        f"singer-sdk changed {owner.__module__}.{owner.__qualname__}.{name}: re-check that "
        f"{recheck}; then set its hash in PINNED to {actual!r}"
    )


def sdk_bases(cls: type) -> list[type]:
    """The singer-sdk classes a class extends, and sdk_compat's (whose hooks stand for them)."""
    return [
        base
        for base in cls.__mro__[1:]
        if base.__module__.startswith("singer_sdk") or base.__module__ == sdk_compat.__name__
    ]


def is_override(member: object) -> bool:
    """Whether a method, classmethod or property is marked @override."""
    function = getattr(member, "__func__", getattr(member, "fget", member))
    return any(getattr(m, "__override__", False) for m in (member, function))


def assigned_attributes(cls: type) -> set[str]:
    """Names a class assigns on `self` in its own source."""
    tree = ast.parse(textwrap.dedent(inspect.getsource(cls)))
    return {
        node.attr
        for node in ast.walk(tree)
        if isinstance(node, ast.Attribute)
        and isinstance(node.ctx, ast.Store)
        and isinstance(node.value, ast.Name)
        and node.value.id == "self"
    }


def names_of(cls: type) -> set[str]:
    """Every non-dunder name a class defines or assigns on its instances."""
    made_by_python = {"_abc_impl"}  # abc.ABCMeta's, in every class of an ABC
    names = {*vars(cls), *assigned_attributes(cls)} - made_by_python
    return {n for n in names if not n.startswith("__")}


def sdk_names(cls: type) -> set[str]:
    """Every name the singer-sdk classes under `cls` define or assign."""
    return set().union(*(names_of(base) for base in sdk_bases(cls)))


def test_every_sdk_hook_overridden_is_marked_and_private_ones_live_in_sdk_compat() -> None:
    for cls in PRODUCT_CLASSES:
        for name in (names_of(cls) & sdk_names(cls)) - CONFIGURED:
            where = f"{cls.__module__}.{cls.__qualname__}.{name}"
            assert is_override(vars(cls).get(name)), f"{where} overrides the SDK without @override"
            if name.startswith("_"):
                assert cls.__module__ == sdk_compat.__name__, (
                    f"{where} overrides a private singer-sdk method outside sdk_compat"
                )


def test_no_module_outside_sdk_compat_uses_a_private_name_of_the_sdk() -> None:
    private = {n for cls in PRODUCT_CLASSES for n in sdk_names(cls) if n.startswith("_")}
    for info in pkgutil.iter_modules(target_brevo.__path__):
        if info.name == "sdk_compat":
            continue
        module = importlib.import_module(f"target_brevo.{info.name}")
        for node in ast.walk(ast.parse(inspect.getsource(module))):
            if isinstance(node, ast.ImportFrom) and (node.module or "").startswith("singer_sdk"):
                names = [node.module or "", *(alias.name for alias in node.names)]
                assert not [n for n in names if "._" in n or n.startswith("_")], (
                    f"{module.__name__} imports a private name from {node.module}"
                )
            if isinstance(node, ast.Attribute):
                assert node.attr not in private, (
                    f"{module.__name__} line {node.lineno} uses singer-sdk's {node.attr}"
                )
