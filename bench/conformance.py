"""Conformance table and handshake cost of the PKI profiles (issue 13).

    .venv/bin/python bench/conformance.py              # the table, both profiles
    .venv/bin/python bench/conformance.py --cases      # and every case's verdicts
    .venv/bin/python bench/conformance.py --handshakes 200   # and the cost per full handshake

The table runs the generated cases of ``tests/conformance`` through
``twistls verify``'s engine (OpenSSL as a client sets it up, then the
client's Checker, with the strict profile for ``strict``; where that fails,
the re-verification a live client does: pyca's path verified again by
OpenSSL for ``strict``, a certificate at exactly its notAfter verified a
second earlier for both).  ``--cases`` prints, next to each case where a
profile knowingly differs from the expected verdict, the reason
(``tests.conformance.run.KNOWN``): with ``strict`` only
``not-after-fractional-seconds`` is a false reject (RFC 5280 forbids the
encoding and ``cryptography`` cannot parse it).  The handshake
figure is N full (non-resumed) in-memory handshakes per profile between a
client and a server engine, with a fresh client factory each time so that
neither the session cache nor the accepted-chain cache helps, and then N
with one factory (sessions off, so every handshake is full but the Checker's
cache hits): the added cost of the strict profile per full handshake, and
with the cache.
"""

from __future__ import annotations

import argparse
import os
import statistics
import sys
import time

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

from tests.conformance.run import KNOWN, table  # noqa: E402


def conformance(show_cases: bool) -> None:
    """Print pass / false accept / false reject per profile."""
    results = table()
    print(f"{'profile':10} {'cases':>5} {'pass':>6} {'%':>6} {'false accepts':>14} {'false rejects':>14}")
    for profile, verdicts in results.items():
        n = len(verdicts)
        passed = sum(v.outcome == "pass" for v in verdicts)
        fa = sum(v.outcome == "false accept" for v in verdicts)
        fr = sum(v.outcome == "false reject" for v in verdicts)
        print(f"{profile:10} {n:5d} {passed:6d} {100 * passed / n:5.1f}% {fa:14d} {fr:14d}")
    if show_cases:
        print()
        rfc, strict = results["rfc5280"], results["strict"]
        for a, b in zip(rfc, strict):
            note = KNOWN.get(a.case.name, "")
            print(f"{a.case.family:28} {a.case.name:36} {a.case.expected:7} rfc5280={a.outcome:13} strict={b.outcome:13} {note}")


def handshakes(n: int) -> None:
    """Time ``n`` full in-memory handshakes per profile."""
    from tests._pki import pki
    from tests._pump import EnginePair
    from twistls.context import ClientContextFactory, ServerContextFactory

    p = pki()
    leaf = p.chained_server
    server = ServerContextFactory(leaf.cert, leaf.key)

    def run(profile: str, fresh: bool) -> float:
        shared = ClientContextFactory("localhost", cafile=p.cafile, pki_profile=profile, session_cache_size=0)
        times = []
        for _ in range(n):
            client = (
                ClientContextFactory("localhost", cafile=p.cafile, pki_profile=profile, session_cache_size=0)
                if fresh
                else shared
            )
            start = time.perf_counter()
            pair = EnginePair(client.create_engine(), server.create_engine()).start()
            pair.pump()
            times.append(time.perf_counter() - start)
            if not pair.client.handshake_done:
                raise SystemExit(f"handshake failed with pki_profile={profile!r}")
        return statistics.median(times) * 1e3

    for label, fresh in (("fresh Checker (no cache)", True), ("one factory (Checker cache hits)", False)):
        rfc = run("rfc5280", fresh)
        strict = run("strict", fresh)
        print(
            f"{label:34} n={n}: rfc5280 {rfc:.3f} ms, strict {strict:.3f} ms per handshake "
            f"(median); added {strict - rfc:+.3f} ms ({100 * (strict - rfc) / rfc:+.1f} %)"
        )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--cases", action="store_true", help="list every case")
    parser.add_argument("--handshakes", type=int, default=0, metavar="N", help="time N handshakes per profile")
    args = parser.parse_args()
    conformance(args.cases)
    if args.handshakes:
        print()
        handshakes(args.handshakes)


if __name__ == "__main__":
    main()
