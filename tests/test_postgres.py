"""The tests' own PostgreSQL server (fakes/postgres.py): real, isolated per test, and found
on a machine without PostgreSQL packages through the binaries the pgserver wheel ships."""

from __future__ import annotations

import importlib.util
import os
import shutil
from pathlib import Path

import psycopg
import pytest

from fakes.postgres import BINARIES_ENV, PostgresServer, PostgresUnavailableError, postgres_bin_dir


def test_each_test_gets_its_own_empty_database_on_a_real_server(
    postgres_server: PostgresServer, postgres_url: str
) -> None:
    other = postgres_server.create_database()
    with psycopg.connect(postgres_url) as conn:
        conn.execute("CREATE TABLE mine (x int)")
        version = conn.execute("SELECT version()").fetchone()
        assert version is not None and version[0].startswith("PostgreSQL ")
    with psycopg.connect(other) as conn:
        assert conn.execute("SELECT to_regclass('mine')").fetchone() == (None,)
    postgres_server.drop_database(other)
    with pytest.raises(psycopg.OperationalError, match="does not exist"):
        psycopg.connect(other).close()


@pytest.mark.skipif(
    importlib.util.find_spec("pgserver") is None,
    reason="the pgserver wheel exists for Linux x86_64 and macOS only",
)
def test_without_the_machines_binaries_the_wheels_server_starts_and_stops(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setenv(BINARIES_ENV, "wheel")
    assert "pgserver" in str(postgres_bin_dir())
    with PostgresServer() as server:
        url = server.create_database()
        with psycopg.connect(url) as conn:
            assert conn.execute("SELECT 1").fetchone() == (1,)
    assert not server.root.exists()
    with pytest.raises(psycopg.OperationalError):
        psycopg.connect(url, connect_timeout=5).close()


@pytest.mark.skipif(
    importlib.util.find_spec("pgserver") is None or os.geteuid() != 0,
    reason="needs the pgserver wheel, and root (who runs the server as nobody)",
)
def test_as_root_wheel_binaries_nobody_cannot_reach_are_copied_where_it_can(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv(BINARIES_ENV, "wheel")
    wheel = postgres_bin_dir()  # site-packages/pgserver/pginstall/bin
    site = tmp_path / "root-only" / "site"  # like a clone under /root: nobody cannot enter
    shutil.copytree(wheel.parent, site / "pgserver" / "pginstall", symlinks=True)
    shutil.copytree(wheel.parents[2] / "pgserver.libs", site / "pgserver.libs", symlinks=True)
    (tmp_path / "root-only").chmod(0o700)
    with PostgresServer(site / "pgserver" / "pginstall" / "bin") as server:
        assert server.bin_dir.is_relative_to(server.root)
        with psycopg.connect(server.create_database()) as conn:
            assert conn.execute("SELECT 1").fetchone() == (1,)


def test_no_binaries_is_one_clear_error(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    monkeypatch.setenv(BINARIES_ENV, str(tmp_path))
    monkeypatch.setenv("PATH", str(tmp_path))
    with pytest.raises(PostgresUnavailableError, match="install Debian's postgresql package"):
        postgres_bin_dir()
