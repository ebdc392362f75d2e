"""HTTP/2 through ALPN, certificates chosen by SNI from a directory, session
resumption and a certificate reload: a twisted.web Site served by twistls,
visited three times by a twistls client.

Run:  twistls mkcert --dir DIR && python http2_sni_resumption.py DIR
"""

import os
import shutil
import sys
import tempfile

from twisted.internet import defer, protocol
from twisted.internet.endpoints import HostnameEndpoint, TCP4ServerEndpoint
from twisted.internet.task import react
from twisted.web import server, static
from twisted.web.resource import Resource

from twistls import ClientContextFactory, ServerContextFactory, TLSWrappingFactory
from twistls.endpoints import wrap_client_tls

#: The HTTP/2 client connection preface and an empty SETTINGS frame (RFC 9113).
H2_PREFACE = b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n" + b"\x00\x00\x00\x04\x00\x00\x00\x00\x00"


class FirstAnswer(protocol.Protocol):
    """Speaks whatever ALPN chose, keeps the first bytes of the answer, closes."""

    def __init__(self):
        self.answer = b""
        self.done = defer.Deferred()

    def speak(self):
        if self.transport.negotiatedProtocol == b"h2":
            self.transport.write(H2_PREFACE)
        else:
            self.transport.write(b"HEAD / HTTP/1.1\r\nHost: localhost\r\nConnection: close\r\n\r\n")

    def dataReceived(self, data):
        if not self.answer:
            self.answer = data
            self.transport.loseConnection()  # close_notify: the session stays resumable

    def connectionLost(self, reason):
        self.done.callback(self.answer)


def sni_directory(certdir):
    """A txsni-style directory: <hostname>.pem files holding key and chain."""
    directory = tempfile.mkdtemp(prefix="twistls-sni-")
    with open(os.path.join(certdir, "server.key"), "rb") as key, open(os.path.join(certdir, "server.pem"), "rb") as chain:
        pem = key.read() + chain.read()
    # More names would be more files: www.example.com.pem, *.example.com.pem...
    for name in ("localhost", "DEFAULT"):
        path = os.path.join(directory, name + ".pem")
        with open(os.open(path, os.O_WRONLY | os.O_CREAT, 0o600), "wb") as f:
            f.write(pem)
    return directory


async def visit(reactor, policy, port):
    endpoint = wrap_client_tls("localhost", policy, HostnameEndpoint(reactor, "localhost", port))
    client = FirstAnswer()
    await endpoint.connect(protocol.Factory.forProtocol(lambda: client))
    client.speak()
    answer = await client.done
    return client.transport.connection_info(), answer


async def main(reactor, certdir):
    directory = sni_directory(certdir)
    root = Resource()
    root.putChild(b"", static.Data(b"hello\n", "text/plain"))
    site = server.Site(root)  # offers h2 and http/1.1 through acceptableProtocols()
    # The certificate is chosen by the client's server_name; no name: DEFAULT.pem.
    server_policy = ServerContextFactory.from_directory(directory)
    listening = TCP4ServerEndpoint(reactor, 0, interface="127.0.0.1")
    port = await listening.listen(TLSWrappingFactory(site, server_policy))
    number = port.getHost().port
    try:
        # One client policy for every connection: it holds the session cache.
        policy = ClientContextFactory(cafile=os.path.join(certdir, "ca.pem"), alpn_protocols=["h2", "http/1.1"])
        info, answer = await visit(reactor, policy, number)
        kind = "an HTTP/2 SETTINGS frame" if answer[3:4] == b"\x04" else repr(answer[:20])
        print(f"1st: {info.version} {info.alpn_protocol} (group {info.group}), server sent {kind}")
        info, answer = await visit(reactor, policy, number)
        print(f"2nd: resumed={info.session_reused}, server_name={info.server_name}")
        server_policy.reload()  # what SIGHUP does under twistd: new connections, new context
        info, answer = await visit(reactor, ClientContextFactory(cafile=os.path.join(certdir, "ca.pem")), number)
        status = answer.split(b"\r\n")[0].decode("ascii", "replace")
        print(f"3rd after reload: {info.alpn_protocol or 'no ALPN'}, {status}")
    finally:
        await port.stopListening()
        shutil.rmtree(directory)


if __name__ == "__main__":
    react(main, sys.argv[1:])
