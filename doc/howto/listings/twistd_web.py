"""Run ``twistd -n web`` on a twistls endpoint string, fetch a file from it
with a verifying twistls client, and stop it.

Run:  twistls mkcert --dir DIR && python twistd_web.py DIR
"""

import os
import signal
import socket
import subprocess
import sys
import tempfile
import warnings

from twisted.internet.endpoints import HostnameEndpoint
from twisted.internet.task import deferLater, react
from twisted.web.client import Agent, readBody
from twisted.web.iweb import IAgentEndpointFactory
from zope.interface import implementer

from twistls import ClientContextFactory
from twistls.endpoints import wrap_client_tls

# Twisted's readBody warns for any HTTP/1.1 response in a __main__ script
# (its transport proxy has no abortConnection); unrelated to TLS.
warnings.filterwarnings("ignore", "Using readBody", DeprecationWarning)


def quote(value):
    return value.replace("\\", "\\\\").replace(":", "\\:").replace("=", "\\=")


def twistd():
    beside = os.path.join(os.path.dirname(sys.executable), "twistd")
    if os.access(beside, os.X_OK):
        return [beside]
    return [sys.executable, "-c", "from twisted.scripts.twistd import run; run()"]


def free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@implementer(IAgentEndpointFactory)
class TwistlsEndpoints:
    def __init__(self, reactor, policy):
        self.reactor, self.policy = reactor, policy

    def endpointForURI(self, uri):
        host = uri.host.decode("ascii")
        return wrap_client_tls(host, self.policy, HostnameEndpoint(self.reactor, host, uri.port))


async def main(reactor, certdir):
    docroot = tempfile.mkdtemp(prefix="twistls-web-")
    with open(os.path.join(docroot, "hello.txt"), "w") as f:
        f.write("served by twistd web over twistls\n")
    port = free_port()
    listen = "twistls:{}:certificate={}:privateKey={}:interface=127.0.0.1".format(
        port, quote(os.path.join(certdir, "server.pem")), quote(os.path.join(certdir, "server.key"))
    )
    command = [*twistd(), "-n", "--pidfile=", "--logfile", os.path.join(docroot, "twistd.log"),
               "web", "--listen", listen, "--path", docroot]
    print("$ twistd -n web --listen '{}' --path {}".format(listen, docroot))
    process = subprocess.Popen(command, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        policy = ClientContextFactory(cafile=os.path.join(certdir, "ca.pem"))
        agent = Agent.usingEndpointFactory(reactor, TwistlsEndpoints(reactor, policy))
        url = f"https://localhost:{port}/hello.txt".encode("ascii")
        for attempt in range(100):  # twistd needs a moment to start listening
            try:
                response = await agent.request(b"GET", url)
                break
            except Exception:
                if process.poll() is not None or attempt == 99:
                    raise
                await deferLater(reactor, 0.1)
        body = await readBody(response)
        print(response.code, body.decode("utf-8").strip())
    finally:
        process.send_signal(signal.SIGTERM)
        process.wait(timeout=15)


if __name__ == "__main__":
    react(main, sys.argv[1:])
