"""The old home of :mod:`twistls.commands.cli`, kept so that ``from
twistls.cli import main`` and the ``twistls`` script of an install made
before the move keep working."""

from __future__ import annotations

from twistls.commands.cli import main, version_text

__all__ = ["main", "version_text"]
