"""The loopback demo behind ``python -m twistls demo``."""

from __future__ import annotations

import os
import tempfile
from typing import Any


def run_demo(message: str) -> int:
    """Serve TLS echo on 127.0.0.1 with a throwaway CA, connect a verifying
    client, print what was negotiated, then show a wrong-name rejection.

    Returns:
        0 when the good client verified and echoed and the bad one was rejected.
    """
    import trustme
    from twisted.internet import defer, protocol, task

    from twistls import ClientContextFactory, ServerContextFactory, TLSWrappingFactory, TLSError
    from twistls.checker import certificate_names

    workdir = tempfile.mkdtemp(prefix="twistls-demo-")
    ca = trustme.CA(organization_name="twistls demo CA (throwaway)")
    leaf = ca.issue_cert("localhost", "127.0.0.1", "::1")
    cert = os.path.join(workdir, "server.pem")
    key = os.path.join(workdir, "server.key")
    cafile = os.path.join(workdir, "ca.pem")
    leaf.cert_chain_pems[0].write_to_path(cert)
    for blob in leaf.cert_chain_pems[1:]:
        blob.write_to_path(cert, append=True)
    leaf.private_key_pem.write_to_path(key)
    os.chmod(key, 0o600)
    ca.cert_pem.write_to_path(cafile)

    class Echo(protocol.Protocol):
        def dataReceived(self, data: bytes) -> None:
            self.transport.write(data)

    class Client(protocol.Protocol):
        def __init__(self) -> None:
            self.done: defer.Deferred[Any] = defer.Deferred()
            self.got = b""

        def connectionMade(self) -> None:
            self.transport.write(message.encode("utf-8"))
            self.transport.when_handshake_done().addCallbacks(self.report, lambda failure: None)

        def report(self, info: Any) -> None:
            from cryptography import x509

            names = certificate_names(x509.load_der_x509_certificate(info.peer_chain_der[0]))
            print(f"  protocol version : {info.version}")
            print(f"  cipher           : {info.cipher} ({info.cipher_bits} bits)")
            print(f"  server name sent : {info.server_name}")
            print(f"  peer names       : {', '.join(names)}")
            print(f"  chain verified   : {'yes' if info.verified else 'no'} (verify result {info.verify_result})")
            print("  Checker verdict  : accepted 'localhost'")

        def dataReceived(self, data: bytes) -> None:
            self.got += data
            if len(self.got) >= len(message.encode("utf-8")):
                self.transport.loseConnection()

        def connectionLost(self, reason: Any) -> None:
            self.done.callback((self.got, reason))

    async def main(reactor: Any) -> int:
        server_cf = ServerContextFactory(cert, key)
        port = reactor.listenTCP(0, TLSWrappingFactory(protocol.Factory.forProtocol(Echo), server_cf), interface="127.0.0.1")
        number = port.getHost().port
        print(f"twistls demo: throwaway CA in {workdir}")
        print(f"twistls demo: TLS echo server on 127.0.0.1:{number}")
        status = 0
        for expected in ("localhost", "wrong.example"):
            print(f"\nclient expecting {expected!r}:")
            client = Client()
            factory = protocol.ClientFactory.forProtocol(lambda: client)
            client_cf = ClientContextFactory(expected, cafile=cafile)
            reactor.connectTCP("127.0.0.1", number, TLSWrappingFactory(factory, client_cf))
            got, reason = await client.done
            if isinstance(reason.value, TLSError):
                print(f"  rejected         : {type(reason.value).__name__}: {reason.value}")
                if expected == "localhost":
                    status = 1
            else:
                print(f"  echoed           : {got.decode('utf-8', 'replace')!r}")
                if expected != "localhost" or got != message.encode("utf-8"):
                    status = 1
        await port.stopListening()
        print("\ntwistls demo:", "OK" if status == 0 else "FAILED")
        return status

    result: list[int] = []

    def run(reactor: Any) -> defer.Deferred[None]:
        return defer.ensureDeferred(main(reactor)).addCallback(result.append)

    try:
        task.react(run)
    except SystemExit as exc:
        if exc.code not in (0, None):
            return int(exc.code) if isinstance(exc.code, int) else 1
    return result[0] if result else 1
