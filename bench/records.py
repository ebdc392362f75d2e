"""Records and sends per HTTP answer: twistls against Twisted's own TLS.

``python bench/records.py [--requests N]`` serves one ``twisted.web`` page
behind each stack over the in-memory pump of the test suite (no sockets:
the count is exact, not timed) and counts, per GET answered on a kept-alive
TLS 1.3 connection, the TLS records and the transport writes (each a send
on a real socket) the server makes.  Prints both stacks and their ratio.
"""

from __future__ import annotations

import argparse
import os
import sys
from typing import Any

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, ROOT)

from twisted.internet import ssl as tssl  # noqa: E402
from twisted.internet.protocol import Factory, Protocol  # noqa: E402
from twisted.internet.task import Clock  # noqa: E402
from twisted.protocols.tls import TLSMemoryBIOFactory  # noqa: E402
from twisted.web.resource import Resource  # noqa: E402
from twisted.web.server import Site  # noqa: E402

from tests._iopump import connect  # noqa: E402
from tests._pki import pki  # noqa: E402
from tests.protocol.test_write_coalescing import records  # noqa: E402
from twistls import ClientContextFactory, ServerContextFactory, TLSWrappingFactory  # noqa: E402


class _Page(Resource):
    isLeaf = True

    def render_GET(self, request: Any) -> bytes:
        request.setHeader(b"content-type", b"text/plain")
        return b"hello, world\n" * 100


def _count(server_factory: Any, client_factory: Any, client: Protocol, requests: int, clock: Clock) -> tuple[float, float]:
    pump = connect(client_factory, server_factory, clock)
    pump.flush()
    total_records = total_sends = 0
    for _ in range(requests):
        client.transport.write(b"GET / HTTP/1.1\r\nHost: localhost\r\n\r\n")
        before = len(pump.server.written)
        pump.flush()
        sends = pump.server.written[before:]
        total_sends += len(sends)
        total_records += len(records(b"".join(sends)))
    return total_records / requests, total_sends / requests


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--requests", type=int, default=20)
    args = parser.parse_args()
    p = pki()
    site = Site(_Page())
    client = Protocol()
    clock = Clock()
    twistls_counts = _count(
        TLSWrappingFactory(site, ServerContextFactory(p.server.cert, p.server.key), clock=clock),
        TLSWrappingFactory(
            Factory.forProtocol(lambda: client), ClientContextFactory("localhost", cafile=p.cafile), clock=clock
        ),
        client,
        args.requests,
        clock,
    )
    with open(p.server.chain, "rb") as f:
        server_options = tssl.PrivateCertificate.loadPEM(f.read()).options()
    with open(p.cafile, "rb") as f:
        trust = tssl.Certificate.loadPEM(f.read())
    peer = Protocol()
    clock = Clock()
    twisted_counts = _count(
        TLSMemoryBIOFactory(server_options, False, site, clock=clock),
        TLSMemoryBIOFactory(
            tssl.optionsForClientTLS("localhost", trust), True, Factory.forProtocol(lambda: peer), clock=clock
        ),
        peer,
        args.requests,
        clock,
    )
    print(f"{'per GET answer':<28}{'records':>10}{'sends':>10}")
    print(f"{'twistls':<28}{twistls_counts[0]:>10.2f}{twistls_counts[1]:>10.2f}")
    print(f"{'Twisted TLS (pyOpenSSL)':<28}{twisted_counts[0]:>10.2f}{twisted_counts[1]:>10.2f}")
    print(
        f"{'ratio twistls/Twisted':<28}{twistls_counts[0] / twisted_counts[0]:>10.2f}"
        f"{twistls_counts[1] / twisted_counts[1]:>10.2f}"
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
