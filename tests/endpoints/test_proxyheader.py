"""The PROXY header reader (twistls._proxyheader) on an in-memory transport."""

from __future__ import annotations

from typing import Any

from twisted.internet import protocol, task
from twisted.internet.address import IPv4Address
from twisted.internet.testing import StringTransport
from twisted.trial.unittest import SynchronousTestCase

from twistls._proxyheader import _ProxyHeaderFactory


class _Recorder(protocol.Protocol):
    def __init__(self) -> None:
        self.received = b""
        self.connected_with: Any = None

    def connectionMade(self) -> None:
        self.connected_with = self.transport

    def dataReceived(self, data: bytes) -> None:
        self.received += data


def _connect(*chunks: bytes) -> tuple[Any, StringTransport, _Recorder]:
    inner = _Recorder()
    factory = _ProxyHeaderFactory(protocol.Factory.forProtocol(lambda: inner), clock=task.Clock(), timeout=5.0)
    wrapper = factory.buildProtocol(IPv4Address("TCP", "10.0.0.1", 1234))
    transport = StringTransport(peerAddress=IPv4Address("TCP", "10.0.0.1", 1234))
    wrapper.makeConnection(transport)
    for chunk in chunks:
        wrapper.dataReceived(chunk)
    return wrapper, transport, inner


class ProxyV1AddressTests(SynchronousTestCase):
    """A v1 header names addresses and ports; anything else is refused, not
    handed on as the peer's address (it reaches logs and applications)."""

    def test_valid_v1_header(self) -> None:
        wrapper, transport, inner = _connect(b"PROXY TCP4 192.0.2.7 198.51.100.1 40000 443\r\nhello")
        self.assertFalse(transport.disconnecting)
        self.assertEqual(wrapper.getPeer(), IPv4Address("TCP", "192.0.2.7", 40000))
        self.assertEqual(inner.received, b"hello")

    def test_valid_v1_ipv6_header(self) -> None:
        wrapper, transport, _ = _connect(b"PROXY TCP6 2001:db8::1 2001:db8::2 40000 443\r\n")
        self.assertFalse(transport.disconnecting)
        self.assertEqual(wrapper.getPeer().host, "2001:db8::1")

    def test_v1_source_that_is_not_an_address_is_refused(self) -> None:
        for header in (
            b"PROXY TCP4 \x1b[2Jforged 198.51.100.1 40000 443\r\n",
            b"PROXY TCP4 evil.example 198.51.100.1 40000 443\r\n",
            b"PROXY TCP4 2001:db8::1 198.51.100.1 40000 443\r\n",
            b"PROXY TCP6 192.0.2.7 2001:db8::2 40000 443\r\n",
            b"PROXY TCP4 192.0.2.7 198.51.100.1\x07 40000 443\r\n",
        ):
            wrapper, transport, inner = _connect(header)
            self.assertTrue(transport.disconnecting, header)
            self.assertIsNone(inner.connected_with, header)

    def test_v1_port_out_of_range_or_not_digits_is_refused(self) -> None:
        for ports in (b"-1 443", b"65536 443", b"40000 99999", b"+1 443", b"4_0 443", b" 1 443"):
            header = b"PROXY TCP4 192.0.2.7 198.51.100.1 " + ports + b"\r\n"
            wrapper, transport, inner = _connect(header)
            self.assertTrue(transport.disconnecting, header)
            self.assertIsNone(inner.connected_with, header)

    def test_v1_line_longer_than_107_bytes_is_refused_even_in_one_read(self) -> None:
        header = b"PROXY UNKNOWN " + b"x" * 200 + b"\r\n"
        _, transport, inner = _connect(header)
        self.assertTrue(transport.disconnecting)
        self.assertIsNone(inner.connected_with)

    def test_v1_longest_header_is_accepted(self) -> None:
        v6 = b"ffff:ffff:ffff:ffff:ffff:ffff:ffff:ffff"
        header = b"PROXY TCP6 " + v6 + b" " + v6 + b" 65535 65535\r\n"
        self.assertEqual(len(header), 104)
        _, transport, inner = _connect(header)
        self.assertFalse(transport.disconnecting)
        self.assertIsNotNone(inner.connected_with)
