"""Fixtures shared by every test: fakes of the vendor APIs, checked against the official specs."""

from __future__ import annotations
