"""Serve HTTPS with twisted.web through a twistls server endpoint string, and
fetch it with twisted.web's Agent through a verifying twistls client endpoint.

Run:  twistls mkcert --dir DIR && python serve_web.py DIR
"""

import os
import sys
import warnings

from twisted.internet.endpoints import HostnameEndpoint, serverFromString
from twisted.internet.task import react
from twisted.web import server, static
from twisted.web.client import Agent, readBody
from twisted.web.iweb import IAgentEndpointFactory
from twisted.web.resource import Resource
from zope.interface import implementer

from twistls import ClientContextFactory
from twistls.endpoints import wrap_client_tls

# Twisted's readBody warns for any HTTP/1.1 response in a __main__ script
# (its transport proxy has no abortConnection); unrelated to TLS.
warnings.filterwarnings("ignore", "Using readBody", DeprecationWarning)


def quote(value):
    return value.replace("\\", "\\\\").replace(":", "\\:").replace("=", "\\=")


@implementer(IAgentEndpointFactory)
class TwistlsEndpoints:
    """Lets twisted.web's Agent open https:// connections through twistls."""

    def __init__(self, reactor, policy):
        self.reactor = reactor
        self.policy = policy

    def endpointForURI(self, uri):
        host = uri.host.decode("ascii")
        return wrap_client_tls(host, self.policy, HostnameEndpoint(self.reactor, host, uri.port))


async def main(reactor, certdir):
    root = Resource()
    root.putChild(b"", static.Data(b"hello over twistls\n", "text/plain"))
    # Port 0: any free port; only on the loopback interface.
    description = "twistls:0:certificate={}:privateKey={}:interface=127.0.0.1".format(
        quote(os.path.join(certdir, "server.pem")), quote(os.path.join(certdir, "server.key"))
    )
    port = await serverFromString(reactor, description).listen(server.Site(root))
    number = port.getHost().port
    print(f"serving https://localhost:{number}/")
    try:
        policy = ClientContextFactory(cafile=os.path.join(certdir, "ca.pem"))
        agent = Agent.usingEndpointFactory(reactor, TwistlsEndpoints(reactor, policy))
        response = await agent.request(b"GET", f"https://localhost:{number}/".encode("ascii"))
        body = await readBody(response)
        print(response.code, body.decode("utf-8").strip())
    finally:
        await port.stopListening()


if __name__ == "__main__":
    react(main, sys.argv[1:])
