"""The README's Meltano commands, run by Meltano 4.4 itself: none of them is one Meltano rejects.

`test_the_readme_section_for_your_own_project_works_as_written` follows the README's "Use it in
your own Meltano project" section in a project made by `meltano init`: every command of its
`sh` blocks, in order, as written, with three substitutions that a test cannot avoid:
- `--from-ref <raw GitHub URL of plugins/…>` reads a copy of that file in which `pip_url`'s
  `git+https://github.com/…` becomes `git+file://<this repository>`: the same install route
  (git, the extras, a wheel built from the committed tree), from the commit checked out here.
  Uncommitted changes are not in it: commit before trusting this test.
- Meltano Hub (`meltano add target-jsonl`) is `fakes/meltano_hub.py` on loopback
  (`MELTANO_HUB_URL`); target-jsonl itself is installed from PyPI.
- Mailgun and Brevo are the sandbox's fakes: `base_url`, `start_date` and the sandbox's list
  ids come from the environment, which wins over meltano.yml as the README says. The keys come
  through the README's own `dev` wiring (`MAILGUN_API_KEY`, `BREVO_API_KEY`, `MAILGUN_DOMAIN`).
The PostgreSQL step changes `pip_url` as the README's sentence says, and a last run proves the
extra's driver works: the store is then a real PostgreSQL database (tests' own server).

`test_every_other_meltano_command_shown_is_one_meltano_accepts` checks every other `meltano …`
the README and docs/ show (code blocks and inline code) with Meltano's own command-line parser
(click, in Meltano's venv): unknown commands, options, choices or missing arguments fail. Those
commands are not run: they need this repository's project and real keys (`--environment=dev`,
the schedule), run until stopped (`invoke …:serve`, orchestrators) or install hundreds of
megabytes (`meltano add airflow`); the runs that matter are covered by test_meltano.py.
"""

from __future__ import annotations

import json
import re
import shlex
import subprocess
from collections.abc import Iterator
from dataclasses import dataclass
from importlib.metadata import distribution
from pathlib import Path
from typing import TYPE_CHECKING, Any

import sqlalchemy
import yaml

from fakes.meltano_hub import FakeMeltanoHub
from fakes.sandbox import BREVO_KEY, MAILGUN_KEY, ROOT
from tests.e2e.conftest import Meltano, clean_env
from tests.e2e.expected import brevo_events, expected_brevo_events, mailgun_events, suppressed

if TYPE_CHECKING:
    from fakes.sandbox import Sandbox
    from tests.e2e.conftest import Sandboxes

DOCUMENTS = [ROOT / "README.md", *sorted((ROOT / "docs").glob("*.md")), ROOT / "bench/README.md"]
JOURNEY = "Use it in your own Meltano project"
REPOSITORY = dict(
    url.split(", ", 1)
    for url in distribution("mailgun-brevo-singer").metadata.get_all("Project-URL")
)["Repository"]
RAW = REPOSITORY.replace("https://github.com/", "https://raw.githubusercontent.com/") + "/main/"
# The README's steps whose effect the journey checks, in the README's order.
CHECKED = [
    "add --plugin-type utility --from-ref",
    "config list --all tap-mailgun",
    "config list --all target-brevo",
    "config set target-brevo engagement_store",
    "test --all",
    "run tap-mailgun target-jsonl",
    "run tap-mailgun target-brevo",
]
SANDBOX_LISTS = '{"engaged": 1, "bounced": 2, "complained": 3}'
# Settings without a value a definition could state, and why: `meltano config list` shows
# them as `None (default)`, and each description says what unset means.
NO_STATIC_DEFAULT = {
    "api_key": "a secret",
    "base_url": "tap: the region's API root, computed from `region`",
    "start_date": "30 days before each first run: Meltano has no relative dates",
    "end_date": "unset: now - event_lag_minutes, moving with every run",
    "webhook_spool_path": "unset: no webhook_events stream",
    "stream_maps": "the SDK's, empty",
    "stream_map_config": "the SDK's, empty",
}


@dataclass(frozen=True)
class Shown:
    """A `meltano …` command as a document shows it."""

    where: str  # file:line
    section: str  # the `## ` heading above it
    in_block: bool  # in a code block, rather than inline code in a sentence
    argv: tuple[str, ...]  # what follows `meltano`


def _argv(words: list[str]) -> tuple[str, ...] | None:
    """What follows the `meltano` executable among shell words, up to a shell operator."""
    for i, word in enumerate(words):
        if word == "meltano" or word.endswith("/bin/meltano"):
            rest = words[i + 1 :]
            ops = [j for j, w in enumerate(rest) if re.fullmatch(r"[0-9]*[<>|&;]+.*", w)]
            return tuple(rest[: ops[0]] if ops else rest)
    return None


def shown_commands(path: Path) -> Iterator[Shown]:
    """Every `meltano …` in a Markdown document: code block lines and inline code spans."""
    text = path.read_text()
    name = path.relative_to(ROOT)
    section, fence = "", None
    for number, line in enumerate(text.splitlines(), 1):
        if line.startswith("```"):
            fence = None if fence is not None else line[3:].strip()
            continue
        if fence is None and line.startswith("## "):
            section = line[3:].strip()
        if fence is not None:
            if fence in ("sh", "bash", "cron", "") and "meltano" in line:
                argv = _argv(shlex.split(line, comments=True))
                if argv:
                    yield Shown(f"{name}:{number}", section, True, argv)
            continue
    # Inline code may wrap across lines: read it from the text with its code blocks blanked.
    prose = re.sub(
        r"^```.*?^```", lambda m: "\n" * m.group(0).count("\n"), text, flags=re.DOTALL | re.M
    )
    for span in re.finditer(r"`([^`]+)`", prose):
        words = span.group(1).split()
        if words[0] in ("meltano", ".venv-meltano/bin/meltano") and len(words) > 1:
            number = prose.count("\n", 0, span.start()) + 1
            yield Shown(f"{name}:{number}", "", False, tuple(words[1:]))


def journey() -> list[tuple[str, ...]]:
    """The README section's code-block commands, in order."""
    return [
        shown.argv
        for shown in shown_commands(ROOT / "README.md")
        if shown.section == JOURNEY and shown.in_block
    ]


def readme_section(title: str) -> str:
    """The README's text under `## title`."""
    text = (ROOT / "README.md").read_text()
    return text.split(f"\n## {title}\n", 1)[1].split("\n## ", 1)[0]


def local_pip_url(pip_url: str) -> str:
    """A definition's pip_url, installing from this checkout's git repository."""
    assert pip_url.endswith(f"@git+{REPOSITORY}"), pip_url
    return pip_url.replace(f"@git+{REPOSITORY}", f"@git+file://{ROOT}")


def local_definitions(folder: Path) -> dict[str, Path]:
    """Copies of plugins/*.yml that install from this checkout, by the README's raw URL."""
    copies = {}
    for shipped in sorted((ROOT / "plugins").glob("*/*.yml")):
        definition = yaml.safe_load(shipped.read_text())
        definition["pip_url"] = local_pip_url(definition["pip_url"])
        copy = folder / shipped.relative_to(ROOT)
        copy.parent.mkdir(parents=True, exist_ok=True)
        copy.write_text(yaml.safe_dump(definition, sort_keys=False))
        copies[RAW + str(shipped.relative_to(ROOT))] = copy
    return copies


def with_local_refs(argv: tuple[str, ...], copies: dict[str, Path]) -> tuple[str, ...]:
    """The command with each `--from-ref` URL replaced by its local copy (the URL must be one)."""
    out = list(argv)
    for i, word in enumerate(argv[:-1]):
        if word == "--from-ref":
            assert argv[i + 1] in copies, f"--from-ref {argv[i + 1]} is no file of plugins/"
            out[i + 1] = str(copies[argv[i + 1]])
    return tuple(out)


def wire_environments(project: Path) -> None:
    """Apply the section's `environments:` YAML to the project, as a reader would paste it."""
    block = re.search(r"```yaml\n(.*?)```", readme_section(JOURNEY), re.DOTALL)
    assert block, "the section shows how to wire the environment"
    meltano_yml = project / "meltano.yml"
    config = yaml.safe_load(meltano_yml.read_text())
    for environment in yaml.safe_load(block.group(1))["environments"]:
        (mine,) = [e for e in config["environments"] if e["name"] == environment["name"]]
        mine.update(environment)
    meltano_yml.write_text(yaml.safe_dump(config, sort_keys=False))


def change_pip_url(project: Path, plugin: str) -> str:
    """Do what the section's sentence says: change the plugin's pip_url in meltano.yml."""
    said = re.search(
        rf"changing {plugin}'s `pip_url` in `meltano.yml`\s+to\s+`([^`]+)`", readme_section(JOURNEY)
    )
    assert said, "the section says which pip_url brings the postgres extra"
    meltano_yml = project / "meltano.yml"
    config = yaml.safe_load(meltano_yml.read_text())
    (declared,) = [p for kind in config["plugins"].values() for p in kind if p["name"] == plugin]
    declared["pip_url"] = local_pip_url(said.group(1))
    meltano_yml.write_text(yaml.safe_dump(config, sort_keys=False))
    return str(said.group(1))


def plugin_venv(project: Path, kind: str, plugin: str) -> Path:
    """The site-packages of a plugin's venv in the project."""
    (site,) = (project / ".meltano" / kind / plugin / "venv" / "lib").glob("python*/site-packages")
    return site


def check_defaults(listing: str, plugin: str) -> None:
    """`meltano config list --all` shows each definition's default (a secret's as `default:`),
    and None only where none can be stated."""
    (shipped,) = (ROOT / "plugins").glob(f"*/{plugin}.yml")
    settings = yaml.safe_load(shipped.read_text())["settings"]
    line = r"^(\w+) \[env: \w+\] current value: (.*?) \(default(?:: (.*))?\)$"
    shown = {name: (value, default) for name, value, default in re.findall(line, listing, re.M)}
    assert set(shown) == {s["name"] for s in settings}, listing
    for setting in settings:
        name = setting["name"]
        if "value" not in setting:
            assert shown[name] == ("None", ""), name
            assert name in NO_STATIC_DEFAULT, f"{plugin} {name}: no default, and no reason why"
        elif setting.get("sensitive"):
            assert shown[name] == ("(redacted)", repr(setting["value"])), name
        else:
            assert shown[name] == (repr(setting["value"]), ""), name


def outcomes(report: str) -> dict[str, str]:
    """`meltano test`'s verdict per plugin, from its closing `name:test.... success` lines."""
    return dict(re.findall(r"^([\w-]+):test\.+ (success|failure)$", report, re.M))


def check_jsonl(project: Path, box: Sandbox) -> None:
    """target-jsonl (Meltano Hub's default variant, from PyPI) wrote the tap's streams."""

    def records(stream: str) -> list[dict[str, Any]]:
        (path,) = (project / "output").glob(f"{stream}*.jsonl")
        return [json.loads(line) for line in path.read_text().splitlines()]

    events = records("events")
    assert sorted(e["id"] for e in events) == sorted(e["id"] for e in mailgun_events(box))
    assert {e["domain"] for e in events} == set(box.mailgun.domains)
    assert {r["address"] for r in records("bounces")} == suppressed(box, "bounces")
    members = records("list_members")
    assert len(members) == sum(len(m) for m in box.mailgun.members.values())


def check_brevo(box: Sandbox, store: str) -> None:
    """Brevo holds each Mailgun outcome once, in the sandbox's lists; the store is PostgreSQL."""
    assert brevo_events(box) == expected_brevo_events(box)
    recipients = {event["recipient"] for event in mailgun_events(box)}
    assert recipients <= set(box.brevo.contacts)
    complained = {e for e, c in box.brevo.contacts.items() if 3 in c["listIds"]}
    assert complained == suppressed(box, "complaints")
    engine = sqlalchemy.create_engine(store.replace("postgresql:", "postgresql+psycopg:", 1))
    try:
        assert sqlalchemy.inspect(engine).get_table_names(), "the store's tables are in PostgreSQL"
    finally:
        engine.dispose()


def through_the_readme_wiring(box: Sandbox, store: str) -> dict[str, str]:
    """The environment that points the project at a sandbox: keys through the README's `dev`
    wiring; the fakes' URLs, the sandbox's first day and list ids, and the tests' PostgreSQL
    database for the README's (a password would be there too), as Meltano's own variables."""
    return {
        "TARGET_BREVO_ENGAGEMENT_STORE": store,
        "MAILGUN_API_KEY": MAILGUN_KEY,
        "MAILGUN_DOMAIN": ",".join(box.mailgun.domains),
        "BREVO_API_KEY": BREVO_KEY,
        "TARGET_BREVO_LISTS": SANDBOX_LISTS,
        **{k: v for k, v in box.env().items() if k.endswith(("BASE_URL", "START_DATE"))},
    }


def test_the_readme_section_for_your_own_project_works_as_written(
    meltano_bin: Path, sandboxes: Sandboxes, tmp_path: Path, postgres_url: str
) -> None:
    box = sandboxes.start()
    project = tmp_path / "project"
    copies = local_definitions(tmp_path / "definitions")
    hub = FakeMeltanoHub().start()
    env = clean_env(tmp_path)
    env["MELTANO_HUB_URL"] = hub.base_url
    reach_the_fakes = through_the_readme_wiring(box, postgres_url)
    setup = Meltano(meltano_bin, env, tmp_path, cwd=tmp_path)
    setup("init", "project", "--no-usage-stats")
    meltano = Meltano(meltano_bin, env, tmp_path, cwd=project)
    checked = []
    try:
        for argv in journey():
            if argv[:2] == ("install", "--clean"):
                change_pip_url(project, "target-brevo")
            talks = argv[0] in ("test", "run")  # to Mailgun and Brevo, that is to the fakes
            done = meltano(*with_local_refs(argv, copies), env=reach_the_fakes if talks else {})
            if argv[:3] == ("config", "list", "--all"):
                check_defaults(done.stdout, argv[3])
            elif argv[0] == "add" and "tap-mailgun-webhooks" in argv:
                wire_environments(project)  # the README's YAML comes after the adds
                # Extras as promised: the receiver's venv has the server; the tap's has neither
                # the server nor a PostgreSQL driver.
                assert (plugin_venv(project, "utilities", argv[-1]) / "starlette").is_dir()
                tap = plugin_venv(project, "extractors", "tap-mailgun")
                assert not [p for p in ("starlette", "uvicorn", "psycopg") if (tap / p).exists()]
            elif argv == ("test", "--all"):
                assert outcomes(done.stdout) == {
                    "tap-mailgun": "success",
                    "target-brevo": "success",
                }
                assert "Brevo accepts the API key" in done.stderr
                refused = meltano(
                    *argv,
                    env={**reach_the_fakes, "MAILGUN_API_KEY": "key-x", "BREVO_API_KEY": "x"},
                    check=False,
                )
                assert refused.returncode != 0
                assert outcomes(refused.stdout) == {
                    "tap-mailgun": "failure",
                    "target-brevo": "failure",
                }
                assert "Mailgun refused the API key" in refused.stderr, refused.stderr[-3000:]
                assert "Brevo refused the API key" in refused.stderr, refused.stderr[-3000:]
            elif argv == ("run", "tap-mailgun", "target-jsonl"):
                check_jsonl(project, box)
            elif argv == ("run", "tap-mailgun", "target-brevo"):
                check_brevo(box, postgres_url)
            elif argv[:4] == ("config", "set", "target-brevo", "engagement_store"):
                assert (plugin_venv(project, "loaders", "target-brevo") / "psycopg").is_dir()
            else:
                continue
            checked.append(" ".join(argv[:4]))
    finally:
        hub.stop()
    # Every step this test knows how to check is still in the README.
    assert checked == CHECKED, checked
    assert hub.calls("GET", r"/plugins/loaders/index$"), "meltano add target-jsonl asked the Hub"


# Runs in Meltano's venv: for each argv (JSON on stdin), what Meltano's click parser says.
PARSE = """
import json, sys
import click
from meltano.cli import cli

# Destructive commands (`state clear`) ask for a yes while their options are parsed.
click.confirm = lambda *args, **kwargs: True

def parse(argv):
    # Meltano's option callbacks look for the project in ctx.obj; there is none to find.
    command, ctx = cli, cli.make_context("meltano", list(argv), obj={"project": None})
    while isinstance(command, click.Group):
        rest = [*ctx._protected_args, *ctx.args]
        if not rest:
            return "mention"  # a group named in a sentence, e.g. `meltano config`
        name, command, rest = command.resolve_command(ctx, rest)
        ctx = command.make_context(name, rest, parent=ctx)
    return "ok"

answers = []
for argv in json.load(sys.stdin):
    try:
        answers.append(parse(argv))
    except click.exceptions.NoArgsIsHelpError:
        answers.append("mention")  # a group that shows its help when given nothing
    except click.exceptions.MissingParameter as exc:
        answers.append("incomplete: " + exc.format_message())
    except click.exceptions.ClickException as exc:
        message = exc.format_message()
        incomplete = "requires an argument" in message
        answers.append(("incomplete: " if incomplete else "") + message)
    except click.exceptions.Exit:
        answers.append("ok")
    except Exception as exc:
        answers.append(f"{type(exc).__name__}: {exc}")
print(json.dumps(answers))
"""
# Meltano 4 took the plugin type as an option; `meltano add loader x` adds a plugin "loader".
PLUGIN_TYPES = {"extractor", "extractors", "loader", "loaders", "utility", "utilities"}
# Forms Meltano 4.4 rejects, which the check must refuse (else it checks nothing).
REJECTED = [
    Shown("", "", True, ("config", "tap-mailgun", "set", "region", "eu")),
    Shown("", "", True, ("add", "loader", "target-jsonl")),
    Shown("", "", True, ("config", "list", "--every", "tap-mailgun")),
    Shown("", "", False, ("run", "--no-such-option", "tap-mailgun")),
]


def parse_problems(meltano_bin: Path, shown: list[Shown]) -> list[str | None]:
    """For each command, None when Meltano's parser accepts it, else why not. Inline code that
    leaves out an argument (`meltano add --from-ref`, `meltano test`) names a command in a
    sentence: accepted when the command and its options exist."""
    answers = subprocess.run(
        [str(meltano_bin.parent / "python"), "-c", PARSE],
        input=json.dumps([s.argv for s in shown]),
        capture_output=True,
        text=True,
        timeout=300,
        check=True,
    )
    problems: list[str | None] = []
    for command, answer in zip(shown, json.loads(answers.stdout), strict=True):
        mention = not command.in_block and answer.startswith("incomplete: ")
        if answer not in ("ok", "mention") and not mention:
            problems.append(answer)
        elif command.argv[0] == "add" and PLUGIN_TYPES & set(command.argv[1:]):
            problems.append("a plugin type as a plugin name (use --plugin-type)")
        else:
            problems.append(None)
    return problems


def test_every_other_meltano_command_shown_is_one_meltano_accepts(meltano_bin: Path) -> None:
    run = set(journey())
    shown = [s for path in DOCUMENTS for s in shown_commands(path) if s.argv not in run]
    assert len(shown) > 20  # the README and docs/ do show Meltano commands
    problems = parse_problems(meltano_bin, [*REJECTED, *shown])
    assert all(problems[: len(REJECTED)]), problems[: len(REJECTED)]
    rejected = [
        f"{s.where}: meltano {' '.join(s.argv)}: {problem}"
        for s, problem in zip(shown, problems[len(REJECTED) :], strict=True)
        if problem
    ]
    assert rejected == []
