"""``python -m twistls`` / ``twistls``: the command line.

Sub-commands:

* ``demo``: a twistls TLS echo server and a verifying twistls client on
  127.0.0.1 with a throwaway CA made at run time; prints what was negotiated
  and the Checker's verdict, then shows a rejected wrong-name client.

Heavy imports (Twisted, M2Crypto) happen inside the sub-commands so that
``--help`` returns at once.
"""

from __future__ import annotations

import argparse
import sys
from typing import Sequence


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="twistls",
        description="Secure-by-default TLS for Twisted, built on M2Crypto.",
    )
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")
    demo = sub.add_parser("demo", help="TLS echo server + verifying client on 127.0.0.1 with a throwaway CA")
    demo.add_argument("--message", default="hello over twistls", help="text the client sends (default: %(default)s)")
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    """Run the command line; returns the exit status."""
    parser = _parser()
    args = parser.parse_args(argv)
    if args.command is None:
        parser.print_help()
        return 2
    if args.command == "demo":
        from twistls._demo import run_demo

        return run_demo(args.message)
    parser.error(f"unknown command {args.command!r}")
    return 2


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
