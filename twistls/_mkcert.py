"""The old home of :mod:`twistls.commands._mkcert` (``twistls mkcert``),
kept for code that imported it from here."""

from __future__ import annotations

from twistls.commands._mkcert import DEFAULT_NAMES, MkcertResult, make_certificates

__all__ = ["DEFAULT_NAMES", "MkcertResult", "make_certificates"]
