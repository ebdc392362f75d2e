"""Leak check: N full TLS connections through one twistls server process.

    python bench/leaks.py [--count 5000] [--concurrency 8] [--mtls] [--json]

Each connection does a handshake (with a client certificate when --mtls, so
the server also fetches the peer certificate), echoes 4 KiB, and closes with
close_notify.  The server runs in a child process (this same file with
--serve); its open file descriptors and RSS are read from /proc:

* open fds after all connections closed must equal the count before;
* RSS growth from connection 1000 to the end must stay under --rss-bound
  (default 8 MiB): M2Crypto SSL, BIO and X509 objects are all freed.

Exits 1 if a bound is broken.  tests/e2e/test_leaks.py runs it with a
smaller count.
"""

from __future__ import annotations

import argparse
import json
import os
import select
import subprocess
import sys
import tempfile
import time

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, os.path.dirname(HERE))


def _rss(pid: int) -> int:
    with open(f"/proc/{pid}/status") as f:
        for line in f:
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) * 1024
    return 0


def _fds(pid: int) -> int:
    return len(os.listdir(f"/proc/{pid}/fd"))


def _fd_targets(pid: int) -> list[str]:
    targets = []
    for fd in sorted(os.listdir(f"/proc/{pid}/fd"), key=int):
        try:
            targets.append(f"{fd}:{os.readlink(f'/proc/{pid}/fd/{fd}')}")
        except OSError:
            pass
    return targets


def serve(cert: str, key: str, cafile: str | None) -> None:
    """The server child: echo, fetch the peer certificate, print PORT."""
    from twisted.internet import protocol, reactor, stdio

    from twistls import ServerContextFactory, TLSWrappingFactory

    class Echo(protocol.Protocol):
        seen = False

        def dataReceived(self, data: bytes) -> None:
            if not self.seen:
                self.seen = True
                self.transport.getPeerCertificate()
                self.transport.connection_info()
            self.transport.write(data)

    class StdinWatch(protocol.Protocol):
        def connectionLost(self, reason: object) -> None:
            if reactor.running:
                reactor.stop()

    cf = ServerContextFactory(cert, key, client_cafile=cafile) if cafile else ServerContextFactory(cert, key)
    port = reactor.listenTCP(0, TLSWrappingFactory(protocol.Factory.forProtocol(Echo), cf), interface="127.0.0.1", backlog=128)
    stdio.StandardIO(StdinWatch())
    sys.stdout.write(f"PORT {port.getHost().port}\n")
    sys.stdout.flush()
    reactor.run()


def run(count: int, concurrency: int, mtls: bool, rss_bound: int, warmup: int) -> dict[str, object]:
    import trustme
    from twisted.internet import defer, protocol, reactor

    from twistls import ClientContextFactory, TLSWrappingFactory

    tmp = tempfile.mkdtemp(prefix="twistls-leaks-")
    ca = trustme.CA()
    server_cert = ca.issue_cert("localhost")
    client_cert = ca.issue_cert("client.example")
    paths = {}
    for name, data in (
        ("ca", ca.cert_pem.bytes()),
        ("cert", b"".join(b.bytes() for b in server_cert.cert_chain_pems)),
        ("key", server_cert.private_key_pem.bytes()),
        ("client", client_cert.private_key_and_cert_chain_pem.bytes()),
    ):
        paths[name] = os.path.join(tmp, name + ".pem")
        with open(paths[name], "wb") as f:
            f.write(data)
        os.chmod(paths[name], 0o600)

    args = [sys.executable, os.path.abspath(__file__), "--serve", paths["cert"], paths["key"]]
    if mtls:
        args.append(paths["ca"])
    proc = subprocess.Popen(args, stdin=subprocess.PIPE, stdout=subprocess.PIPE)
    result: dict[str, object] = {}
    try:
        ready, _, _ = select.select([proc.stdout], [], [], 30)
        if not ready:
            raise RuntimeError("server did not start")
        port = int(proc.stdout.readline().split()[1])  # type: ignore[union-attr]
        client_cf = ClientContextFactory(
            "localhost", cafile=paths["ca"], **({"certificate": paths["client"]} if mtls else {})
        )
        payload = os.urandom(4096)
        samples: dict[str, int] = {}

        class One(protocol.Protocol):
            def __init__(self) -> None:
                self.got = 0
                self.done: defer.Deferred[None] = defer.Deferred()

            def connectionMade(self) -> None:
                self.transport.write(payload)

            def dataReceived(self, data: bytes) -> None:
                self.got += len(data)
                if self.got >= len(payload):
                    self.transport.loseConnection()

            def connectionLost(self, reason: object) -> None:
                self.ok = self.got == len(payload)
                self.done.callback(None)

        failures = []

        def connect_one() -> defer.Deferred[None]:
            one = One()
            factory = protocol.ClientFactory.forProtocol(lambda: one)
            factory.clientConnectionFailed = lambda c, r: one.done.callback(None)  # type: ignore[method-assign]
            reactor.connectTCP("127.0.0.1", port, TLSWrappingFactory(factory, client_cf))

            def check(_: object) -> None:
                if not getattr(one, "ok", False):
                    failures.append(1)

            return one.done.addCallback(check)

        @defer.inlineCallbacks
        def drive() -> object:
            yield defer.succeed(None)
            started = time.monotonic()
            samples["fds_before_first"] = _fds(proc.pid)
            samples["rss_start"] = _rss(proc.pid)
            done = 0
            while done < count:
                batch = min(concurrency, count - done)
                yield defer.gatherResults([connect_one() for _ in range(batch)])
                before = done
                done += batch
                if before == 0:
                    # One-time lazily opened fds (not per connection) are not leaks:
                    # the baseline is taken once the first batch has closed.
                    for _ in range(100):
                        yield _sleep(0.02)
                        if _fds(proc.pid) <= samples["fds_before_first"] + 4:
                            break
                    samples["fds_start"] = _fds(proc.pid)
                    start_targets = _fd_targets(proc.pid)
                if before < warmup <= done:
                    samples["rss_after_warmup"] = _rss(proc.pid)
            for _ in range(100):  # the server may close a moment after the client
                if _fds(proc.pid) <= samples["fds_start"]:
                    break
                yield _sleep(0.05)
            samples["fds_end"] = _fds(proc.pid)
            if samples["fds_end"] != samples["fds_start"]:
                samples["fd_targets_start"] = start_targets  # type: ignore[assignment]
                samples["fd_targets_end"] = _fd_targets(proc.pid)  # type: ignore[assignment]
            samples["rss_end"] = _rss(proc.pid)
            samples["seconds"] = round(time.monotonic() - started, 2)  # type: ignore[assignment]
            reactor.stop()

        def _sleep(seconds: float) -> defer.Deferred[None]:
            d: defer.Deferred[None] = defer.Deferred()
            reactor.callLater(seconds, d.callback, None)
            return d

        def start() -> None:
            drive().addErrback(lambda f: (samples.setdefault("error", str(f.value)), reactor.stop()))  # type: ignore[arg-type]

        reactor.callWhenRunning(start)
        reactor.run()
        base = samples.get("rss_after_warmup", samples.get("rss_start", 0))
        growth = samples.get("rss_end", 0) - base
        result = {
            "count": count,
            "mtls": mtls,
            "failed_connections": len(failures),
            **samples,
            "rss_growth_after_warmup": growth,
            "rss_bound": rss_bound,
            "ok": not failures
            and "error" not in samples
            and samples.get("fds_end") == samples.get("fds_start")
            and growth < rss_bound,
        }
    finally:
        if proc.poll() is None:
            proc.kill()
        proc.wait(10)
    return result


def main() -> None:
    if len(sys.argv) > 1 and sys.argv[1] == "--serve":
        serve(sys.argv[2], sys.argv[3], sys.argv[4] if len(sys.argv) > 4 else None)
        return
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--count", type=int, default=5000)
    parser.add_argument("--concurrency", type=int, default=8)
    parser.add_argument("--warmup", type=int, default=1000, help="connections before the RSS baseline")
    parser.add_argument("--rss-bound", type=int, default=8 << 20, help="bytes of RSS growth allowed after warm-up")
    parser.add_argument("--mtls", action="store_true", help="clients present certificates")
    parser.add_argument("--json", action="store_true")
    opts = parser.parse_args()
    result = run(opts.count, opts.concurrency, opts.mtls, opts.rss_bound, min(opts.warmup, opts.count))
    if opts.json:
        print(json.dumps(result))
    else:
        for k, v in result.items():
            print(f"{k:>26}: {v}")
    sys.exit(0 if result.get("ok") else 1)


if __name__ == "__main__":
    main()
