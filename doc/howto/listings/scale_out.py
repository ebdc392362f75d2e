"""A fleet behind a load balancer: two twistls servers ("machine A" and
"machine B", here two ports of 127.0.0.1) share one session-ticket key file
and read a PROXY protocol header from a round-robin balancer; one client
connects four times through the balancer and resumes on whichever machine
it lands, including the one that did not issue its ticket.

Run:  twistls mkcert --dir DIR && python scale_out.py DIR
"""

import itertools
import os
import subprocess
import sys

from twisted.internet import defer, protocol
from twisted.internet.endpoints import HostnameEndpoint, TCP4ClientEndpoint, serverFromString
from twisted.internet.task import react

from twistls import ClientContextFactory
from twistls.endpoints import wrap_client_tls


class Hello(protocol.Protocol):
    """A backend's answer: which machine served, and the client's address as the PROXY header gave it."""

    def dataReceived(self, data):
        peer = self.transport.getPeer()
        self.transport.write(f"{self.factory.machine} served {peer.host}:{peer.port}".encode())
        self.transport.loseConnection()


class Relay(protocol.Protocol):
    """One side of a balancer connection: copies bytes to its partner."""

    partner = None

    def dataReceived(self, data):
        self.partner.transport.write(data)

    def connectionLost(self, reason):
        if self.partner is not None and self.partner.transport is not None:
            self.partner.transport.loseConnection()


class Balancer(Relay):
    """A TCP (layer 4) balancer as HAProxy runs it with 'send-proxy': picks the
    next backend, sends a PROXY v1 header naming the client, then relays."""

    def connectionMade(self):
        self.transport.pauseProducing()
        backend_port = next(self.factory.backends)
        endpoint = TCP4ClientEndpoint(self.factory.reactor, "127.0.0.1", backend_port)
        d = endpoint.connect(protocol.Factory.forProtocol(Relay))
        d.addCallbacks(self.relay_to, lambda _: self.transport.loseConnection())

    def relay_to(self, backend):
        client, here = self.transport.getPeer(), self.transport.getHost()
        backend.transport.write(f"PROXY TCP4 {client.host} {here.host} {client.port} {here.port}\r\n".encode())
        self.partner, backend.partner = backend, self
        self.transport.resumeProducing()


class Answer(protocol.Protocol):
    def __init__(self):
        self.done = defer.Deferred()
        self.text = b""

    def dataReceived(self, data):
        self.text += data

    def connectionLost(self, reason):
        self.done.callback(self.text.decode())


async def machine(reactor, name, certdir, key_file):
    """One backend server: the same certificate and the same ticket-key file on every machine."""
    string = (
        f"twistls:0:interface=127.0.0.1:certificate={certdir}/server.pem:privateKey={certdir}/server.key"
        f":ticketKeyFile={key_file}:proxyProtocol=yes"
    )
    factory = protocol.Factory.forProtocol(Hello)
    factory.machine = name
    return await serverFromString(reactor, string).listen(factory)


async def main(reactor, certdir):
    key_file = os.path.join(certdir, "tickets.key")
    # What an operator runs once, then copies to every machine (and again with --rotate, plus SIGHUP).
    subprocess.run([sys.executable, "-m", "twistls", "mkticketkey", key_file, "--force"], check=True)

    a = await machine(reactor, "machine A", certdir, key_file)
    b = await machine(reactor, "machine B", certdir, key_file)
    balancer_factory = protocol.Factory.forProtocol(Balancer)
    balancer_factory.reactor = reactor
    balancer_factory.backends = itertools.cycle([a.getHost().port, b.getHost().port])
    balancer = reactor.listenTCP(0, balancer_factory, interface="127.0.0.1")
    try:
        # One client policy for every visit: it holds the session cache.
        policy = ClientContextFactory(cafile=os.path.join(certdir, "ca.pem"))
        resumed = 0
        for visit in range(1, 5):
            endpoint = HostnameEndpoint(reactor, "localhost", balancer.getHost().port)
            answer = Answer()
            await wrap_client_tls("localhost", policy, endpoint).connect(protocol.Factory.forProtocol(lambda: answer))
            info = answer.transport.connection_info()
            answer.transport.write(b"hello")
            text = await answer.done
            print(f"visit {visit}: {text}, resumed={info.session_reused}")
            resumed += info.session_reused
        print(f"resumed on {resumed} of 3 later visits")
    finally:
        await balancer.stopListening()
        await a.stopListening()
        await b.stopListening()


if __name__ == "__main__":
    react(main, sys.argv[1:])
