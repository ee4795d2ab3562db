"""What a Meltano user installs: the plugin definitions, meltano.yml and the console scripts agree.

The definitions in plugins/ (for `meltano add --from-ref`) and this project's meltano.yml are
written by hand; these tests hold them to what the plugins themselves report through their
console scripts (`--about --format=json`), so a setting, default, kind or secret cannot drift.
"""

from __future__ import annotations

import json
import re
import subprocess
import sys
from importlib.metadata import distribution, version
from pathlib import Path
from typing import Any

import pytest
import yaml

from mailgun_health.cli import command as health_command
from mailgun_validate.cache import default_cache_path
from mailgun_validate.mapper import MailgunValidateMapper
from tap_mailgun.tap import TapMailgun
from target_brevo.store import default_store_path
from target_brevo.target import TargetBrevo

ROOT = Path(__file__).resolve().parents[1]
BIN = Path(sys.executable).parent
# What pyproject.toml declares, as the installed distribution's metadata carries it.
DISTRIBUTION = TapMailgun.package_name or ""
METADATA = distribution(DISTRIBUTION).metadata
REPOSITORY = dict(u.split(", ", 1) for u in METADATA.get_all("Project-URL") or [])["Repository"]
# plugin -> (definition file, extras its pip_url installs, Singer plugin class or None)
PLUGINS: dict[str, tuple[str, str, Any]] = {
    "tap-mailgun": ("plugins/extractors/tap-mailgun.yml", "", TapMailgun),
    "target-brevo": ("plugins/loaders/target-brevo.yml", "", TargetBrevo),
    "mailgun-validate-mapper": (
        "plugins/mappers/mailgun-validate-mapper.yml",
        "",
        MailgunValidateMapper,
    ),
    "tap-mailgun-webhooks": ("plugins/utilities/tap-mailgun-webhooks.yml", "[webhooks]", None),
    "mailgun-health": ("plugins/utilities/mailgun-health.yml", "", None),
}
SINGER_PLUGINS = [name for name, (_, _, cls) in PLUGINS.items() if cls is not None]
# Settings the SDK adds to every plugin that the definitions offer (capability stream-maps).
SDK_SETTINGS = {"stream_maps", "stream_map_config"}
# Defaults the plugin computes from MELTANO_PROJECT_ROOT, which a definition can state (Meltano
# expands the variable), so that `meltano config list` shows them.
PROJECT_DEFAULTS = {
    "engagement_store": "$MELTANO_PROJECT_ROOT/.meltano/target-brevo/engagement.sqlite",
    "validation_cache": "$MELTANO_PROJECT_ROOT/.meltano/mailgun-validate/validations.sqlite",
}


def definition(plugin: str) -> dict[str, Any]:
    """The plugin's shipped definition file."""
    loaded: dict[str, Any] = yaml.safe_load((ROOT / PLUGINS[plugin][0]).read_text())
    return loaded


def project_plugin(plugin: str) -> dict[str, Any]:
    """The plugin as this repository's meltano.yml declares it."""
    project = yaml.safe_load((ROOT / "meltano.yml").read_text())
    found = [p for kind in project["plugins"].values() for p in kind if p["name"] == plugin]
    assert len(found) == 1
    return dict(found[0])


def run(*args: str) -> str:
    """Run a console script of the installed package; its stdout."""
    result = subprocess.run(
        [str(BIN / args[0]) if "/" not in args[0] else args[0], *args[1:]],
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert result.returncode == 0, result.stderr[-2000:]
    return result.stdout


def executable(plugin: str) -> str:
    """The plugin's console script, as its definition names it."""
    return str(definition(plugin)["executable"])


def about(plugin: str) -> dict[str, Any]:
    """`<plugin> --about --format=json`, through the console script."""
    loaded: dict[str, Any] = json.loads(run(executable(plugin), "--about", "--format=json"))
    return loaded


def own_settings(plugin: str) -> set[str]:
    """The settings the plugin class declares itself, read in a fresh interpreter.

    The SDK adds its built-in settings (flattening, batch ...) into the class's own
    `config_jsonschema` dict once a plugin is built, so in this test process, after other
    tests built taps and targets, the class attribute no longer shows the declared set.
    """
    cls = PLUGINS[plugin][2]
    code = (
        f"import json; from {cls.__module__} import {cls.__name__} as P; "
        "print(json.dumps(sorted(P.config_jsonschema['properties'])))"
    )
    return set(json.loads(run(sys.executable, "-c", code)))


def meltano_kind(schema: dict[str, Any]) -> str:
    """The Meltano setting kind that matches a JSON-schema property."""
    if "enum" in schema:
        return "options"
    if schema.get("format") == "date-time":
        return "date_iso8601"
    types = [t for t in schema["type"] if t != "null"]
    assert len(types) == 1, schema
    return {"number": "decimal"}.get(types[0], types[0])


@pytest.mark.parametrize("plugin", SINGER_PLUGINS)
def test_definition_settings_are_what_the_plugin_reports(plugin: str) -> None:
    reported = about(plugin)
    properties = reported["settings"]["properties"]
    settings = {s["name"]: s for s in definition(plugin)["settings"]}
    own = own_settings(plugin)
    assert set(settings) == own | SDK_SETTINGS
    for name, setting in settings.items():
        schema = properties[name]
        assert setting["kind"] == meltano_kind(schema), name
        assert setting.get("value") == PROJECT_DEFAULTS.get(name, schema.get("default")), name
        assert setting.get("sensitive", False) == schema.get("secret", False), name
        if "enum" in schema:
            assert [o["value"] for o in setting["options"]] == schema["enum"], name
        assert setting["label"] and setting["description"], name
    required = set(reported["settings"].get("required", []))
    groups = definition(plugin)["settings_group_validation"]
    assert required == {name for group in groups for name in group}
    assert set(definition(plugin)["capabilities"]) <= set(reported["capabilities"])


def test_a_project_default_is_where_the_plugin_puts_it_under_meltano(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    monkeypatch.setenv("MELTANO_PROJECT_ROOT", str(tmp_path))
    assert "default" not in about("target-brevo")["settings"]["properties"]["engagement_store"]
    stated = PROJECT_DEFAULTS["engagement_store"].replace("$MELTANO_PROJECT_ROOT", str(tmp_path))
    assert default_store_path() == Path(stated)
    mapper = about("mailgun-validate-mapper")["settings"]["properties"]["validation_cache"]
    assert "default" not in mapper
    stated = PROJECT_DEFAULTS["validation_cache"].replace("$MELTANO_PROJECT_ROOT", str(tmp_path))
    assert default_cache_path() == Path(stated)


@pytest.mark.parametrize("plugin", list(PLUGINS))
def test_meltano_yml_declares_the_shipped_definition(plugin: str) -> None:
    shipped, declared = definition(plugin), project_plugin(plugin)
    for key in (
        "namespace",
        "label",
        "description",
        "executable",
        "settings",
        "settings_group_validation",
        "commands",
    ):
        assert declared.get(key) == shipped.get(key), key
    assert declared.get("capabilities") == shipped.get("capabilities")
    # This project installs its own working tree, with the same extras.
    assert declared["pip_url"] == f"-e .{PLUGINS[plugin][1]}"


@pytest.mark.parametrize("plugin", list(PLUGINS))
def test_definitions_install_from_the_project_repository(plugin: str) -> None:
    shipped = definition(plugin)
    assert shipped["name"] == plugin
    assert shipped["pip_url"] == f"{DISTRIBUTION}{PLUGINS[plugin][1]}@git+{REPOSITORY}"
    assert shipped["repo"] == REPOSITORY
    assert shipped["docs"].startswith(REPOSITORY)
    scripts = {
        e.name for e in distribution(DISTRIBUTION).entry_points if e.group == "console_scripts"
    }
    assert shipped["executable"] in scripts


def test_the_tap_alone_needs_neither_the_server_nor_a_postgres_driver() -> None:
    by_extra: dict[str, set[str]] = {}
    for requirement in METADATA.get_all("Requires-Dist") or []:
        name = re.split(r"[\s<>=~;\[]", requirement, maxsplit=1)[0].lower()
        extra = re.search(r"extra == \"(\w+)\"", requirement)
        by_extra.setdefault(extra.group(1) if extra else "", set()).add(name)
    assert not by_extra[""] & {"starlette", "uvicorn", "psycopg", "psycopg2"}
    assert by_extra["webhooks"] == {"starlette", "uvicorn"}
    assert by_extra["postgres"] == {"psycopg"}


def test_health_settings_are_the_commands_options() -> None:
    """Meltano hands a utility's settings over as MAILGUN_HEALTH_<NAME>; each must be an option
    the command reads, with the option's default."""
    by_env = {p.envvar: p for p in health_command.params if isinstance(p.envvar, str)}
    for setting in definition("mailgun-health")["settings"]:
        option = by_env.get(f"MAILGUN_HEALTH_{setting['name'].upper()}")
        assert option is not None, setting["name"]
        # Click marks "no default" with a sentinel of its own (not None since 8.2).
        default = option.default if isinstance(option.default, int | str | Path) else None
        expected = setting.get("value")
        if setting["name"] == "output":  # a project path under Meltano, a cwd file otherwise
            assert expected == "$MELTANO_PROJECT_ROOT/output/mailgun-health.html"
            assert default == Path("mailgun-health.html")
        else:
            assert expected == default, setting["name"]


@pytest.mark.parametrize("plugin", SINGER_PLUGINS)
def test_version_is_the_distributions(plugin: str) -> None:
    name = executable(plugin)
    printed = run(name, "--version")
    assert printed.startswith(f"{name} v{version(DISTRIBUTION)}, Meltano SDK v")
    assert "could not be detected" not in printed


@pytest.mark.parametrize("plugin", SINGER_PLUGINS)
def test_about_markdown_renders_as_markdown(plugin: str) -> None:
    text = run(executable(plugin), "--about", "--format=markdown")
    lines = text.splitlines()
    assert lines[0] == f"# `{executable(plugin)}`"
    assert lines[2] == PLUGINS[plugin][2].__doc__.strip()
    # An indented line after a blank one is a code block in Markdown.
    assert not [line for line in lines if line.startswith(("    ", "\t"))]
    rows = [line for line in lines if line.startswith("|")]
    assert len(rows) > 10
    assert {line.count("|") for line in rows} == {5}  # no stray pipe splits a settings row
