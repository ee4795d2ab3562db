"""The validation cache: Mailgun's verdict per address and when it was given, on disk.

Validation is billed per address, so a verdict is kept between runs and reused until it is
`validation_ttl_days` old. One SQLAlchemy connection: SQLite by default, any URL works (e.g.
the PostgreSQL server the engagement store uses). Writes become durable at `commit`, which the
mapper calls at every STATE message and at the end; in dry run it never commits.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import msgspec
from sqlalchemy import Column, Float, MetaData, String, Table, Text, create_engine, delete, select

from plugin_cli import data_path, database_url

metadata = MetaData()
validations_table = Table(
    "mailgun_validations",
    metadata,
    Column("address", String(254), primary_key=True),
    Column("verdict", Text, nullable=False),  # JSON of the record's `validation`
    Column("validated_at", Float, nullable=False),  # epoch seconds
)


def default_cache_path() -> Path:
    """Where the SQLite cache lives when `validation_cache` is not set (see `data_path`)."""
    return data_path("mailgun-validate", "validations.sqlite")


class ValidationCache:
    """Verdicts by normalized address."""

    def __init__(self, setting: str | None) -> None:
        """`setting` is `validation_cache`: a path (SQLite) or an SQLAlchemy URL."""
        self.engine = create_engine(database_url("validation_cache", setting, default_cache_path()))
        metadata.create_all(self.engine)
        self.conn = self.engine.connect()

    def get(self, address: str) -> tuple[dict[str, Any], float] | None:
        """The cached verdict of `address` and its epoch, or None."""
        row = self.conn.execute(
            select(validations_table.c.verdict, validations_table.c.validated_at).where(
                validations_table.c.address == address
            )
        ).first()
        if row is None:
            return None
        verdict: dict[str, Any] = msgspec.json.decode(row.verdict)
        return verdict, float(row.validated_at)

    def put(self, address: str, verdict: dict[str, Any], validated_at: float) -> None:
        """Keep (or replace) the verdict of `address`; durable at the next `commit`."""
        table = validations_table
        self.conn.execute(delete(table).where(table.c.address == address))
        self.conn.execute(
            table.insert().values(
                address=address,
                verdict=msgspec.json.encode(verdict).decode(),
                validated_at=validated_at,
            )
        )

    def commit(self) -> None:
        """Make every `put` so far durable."""
        self.conn.commit()

    def close(self) -> None:
        """Drop what was not committed and release the connection."""
        self.conn.rollback()
        self.conn.close()
        self.engine.dispose()
