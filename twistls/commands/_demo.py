"""The demo behind ``python -m twistls demo`` (and ``bash run.sh demo``).

With ``twistd`` available it shows the whole tool chain as a user would run
it: ``twistls mkcert`` makes a throwaway CA, ``twistd -n twistls echo`` serves
TLS (and STARTTLS) on 127.0.0.1, ``twistls probe`` checks it (verified),
checks the STARTTLS port (verified) and checks it expecting a wrong name
(rejected, with the reason), then the server is stopped.  Without twistd it
falls back to an in-process server and client.
"""

from __future__ import annotations

import os
import shlex
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
from typing import TYPE_CHECKING, Any

from twisted.internet import defer, protocol

if TYPE_CHECKING:
    from twisted.python.failure import Failure

    from twistls._typing import TLSTransport


def run_demo(message: str, *, in_process: bool = False) -> int:
    """Run the demo; returns 0 when everything behaved as it should."""
    if not in_process:
        command = _twistd_command()
        if command is not None:
            status = run_twistd_demo(command)
            if status is not None:
                return status
            print("twistls demo: twistd could not start the twistls plugin; using the in-process demo\n")
    return run_in_process_demo(message)


def _twistd_command() -> list[str] | None:
    """How to run twistd with this interpreter, or ``None`` without Twisted."""
    try:
        import twisted.scripts.twistd  # noqa: F401
    except ImportError:
        return None
    beside = os.path.join(os.path.dirname(sys.executable), "twistd")
    if os.access(beside, os.X_OK):
        return [beside]
    found = shutil.which("twistd")
    if found:
        return [found]
    return [sys.executable, "-c", "from twisted.scripts.twistd import run; run()"]


def _free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def _wait_listening(port: int, process: subprocess.Popen[bytes], deadline: float) -> bool:
    while time.monotonic() < deadline:
        if process.poll() is not None:
            return False
        try:
            with socket.create_connection(("127.0.0.1", port), timeout=0.5):
                return True
        except OSError:
            time.sleep(0.1)
    return False


def _show(argv: list[str]) -> int:
    shown = ["twistls", *argv[3:]] if argv[1:3] == ["-m", "twistls"] else argv
    print("$ " + " ".join(shlex.quote(a) for a in shown))
    try:
        done = subprocess.run(argv, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, timeout=60)
    except subprocess.TimeoutExpired:
        print("  (timed out)")
        return -1
    for line in done.stdout.decode("utf-8", "replace").rstrip().splitlines():
        print("  " + line)
    print(f"  (exit status {done.returncode})\n")
    return done.returncode


def _stop(process: subprocess.Popen[bytes]) -> None:
    if process.poll() is None:
        process.send_signal(signal.SIGTERM)
        try:
            process.wait(timeout=10)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait(timeout=10)


def _echo_argv(twistd: list[str], workdir: str, tls_port: int, plain_port: int) -> list[str]:
    """``twistd -n twistls echo`` on 127.0.0.1 with the certificate mkcert wrote in ``workdir``."""
    return [
        *twistd,
        "-n",
        "--pidfile", os.path.join(workdir, "twistd.pid"),
        "--logfile", os.path.join(workdir, "twistd.log"),
        "twistls", "echo",
        "--certificate", os.path.join(workdir, "server.pem"),
        "--private-key", os.path.join(workdir, "server.key"),
        "--interface", "127.0.0.1",
        "--port", str(tls_port),
        "--starttls-port", str(plain_port),
    ]


def _report_not_listening(process: subprocess.Popen[bytes], workdir: str) -> None:
    """Stop ``process`` and print the end of what it and its log said."""
    _stop(process)
    out = process.stdout.read().decode("utf-8", "replace") if process.stdout else ""
    log = os.path.join(workdir, "twistd.log")
    if os.path.exists(log):
        with open(log, encoding="utf-8", errors="replace") as f:
            out += f.read()
    print("  twistd did not start listening:\n  " + "\n  ".join(out.strip().splitlines()[-8:]))


def run_twistd_demo(twistd: list[str]) -> int | None:
    """mkcert, ``twistd -n twistls echo``, three probes, stop.

    Returns:
        The exit status, or ``None`` when the server could not be started
        (the caller then falls back to the in-process demo).
    """
    workdir = tempfile.mkdtemp(prefix="twistls-demo-")
    me = [sys.executable, "-m", "twistls"]
    print("twistls demo: a throwaway CA, twistd serving TLS, and twistls probe\n")
    if _show([*me, "mkcert", "--dir", workdir]) != 0:
        return 1
    cafile = os.path.join(workdir, "ca.pem")
    tls_port, plain_port = _free_port(), _free_port()
    while plain_port == tls_port:
        plain_port = _free_port()
    argv = _echo_argv(twistd, workdir, tls_port, plain_port)
    shown = ["twistd", *argv[len(twistd):]]
    print("$ " + " ".join(shlex.quote(a) for a in shown) + " &")
    process = subprocess.Popen(argv, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, cwd=workdir)
    try:
        if not (_wait_listening(tls_port, process, time.monotonic() + 20)
                and _wait_listening(plain_port, process, time.monotonic() + 10)):
            _report_not_listening(process, workdir)
            return None
        print(f"  (twistd pid {process.pid}: TLS on 127.0.0.1:{tls_port}, STARTTLS on 127.0.0.1:{plain_port})\n")
        good = _show([*me, "probe", f"localhost:{tls_port}", "--cafile", cafile])
        starttls = _show(
            [*me, "probe", f"127.0.0.1:{plain_port}", "--starttls", "plain-line", "--cafile", cafile, "--no-reconnect"]
        )
        wrong = _show(
            [*me, "probe", f"127.0.0.1:{tls_port}", "--servername", "wrong.example", "--cafile", cafile]
        )
    finally:
        print(f"$ kill {process.pid}")
        _stop(process)
        if process.returncode in (0, -signal.SIGTERM):
            print("  (twistd shut down cleanly)")
        else:
            print(f"  (twistd exited with status {process.returncode})")
    ok = good == 0 and starttls == 0 and wrong == 1
    print("\ntwistls demo:", "OK (verified twice, wrong name rejected)" if ok else "FAILED")
    return 0 if ok else 1


def run_in_process_demo(message: str) -> int:
    """Serve TLS echo on 127.0.0.1 with a throwaway CA, connect a verifying
    client, print what was negotiated, then show a wrong-name rejection.

    Returns:
        0 when the good client verified and echoed and the bad one was rejected.
    """
    from twisted.internet import task

    workdir = tempfile.mkdtemp(prefix="twistls-demo-")
    cert, key, cafile = _throwaway_pki(workdir)
    result: list[int] = []

    def run(reactor: Any) -> defer.Deferred[None]:
        main = _serve_and_connect(reactor, message, workdir, cert, key, cafile)
        return defer.ensureDeferred(main).addCallback(result.append)

    try:
        task.react(run)
    except SystemExit as exc:
        if exc.code not in (0, None):
            return int(exc.code) if isinstance(exc.code, int) else 1
    return result[0] if result else 1


def _throwaway_pki(workdir: str) -> tuple[str, str, str]:
    """A trustme CA and a certificate for localhost, 127.0.0.1 and ::1 in
    ``workdir``: the paths of the chain, the key (mode 0600) and the CA."""
    import trustme

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
    return cert, key, cafile


class _Client(protocol.Protocol):
    """Sends ``message``, prints what the handshake negotiated, and fires
    :attr:`done` with what was echoed and why the connection ended."""

    transport: TLSTransport  # type: ignore[assignment]  # a TLSProtocolWrapper (see twistls._typing)

    def __init__(self, message: str) -> None:
        self.message = message.encode("utf-8")
        self.done: defer.Deferred[Any] = defer.Deferred()
        self.got = b""

    def connectionMade(self) -> None:
        self.transport.write(self.message)
        self.transport.when_handshake_done().addCallbacks(self.report, lambda failure: None)

    def report(self, info: Any) -> None:
        from cryptography import x509

        from twistls._info import printable
        from twistls.checker import certificate_names

        # The peer chose its certificate (and so these names): escaped for the terminal.
        names = certificate_names(x509.load_der_x509_certificate(info.peer_chain_der[0]))
        print(f"  protocol version : {printable(str(info.version))}")
        print(f"  cipher           : {printable(str(info.cipher))} ({info.cipher_bits} bits)")
        print(f"  server name sent : {printable(str(info.server_name))}")
        print(f"  peer names       : {printable(', '.join(names))}")
        print(f"  chain verified   : {'yes' if info.verified else 'no'} (verify result {info.verify_result})")
        print("  Checker verdict  : accepted 'localhost'")

    def dataReceived(self, data: bytes) -> None:
        self.got += data
        if len(self.got) >= len(self.message):
            self.transport.loseConnection()

    def connectionLost(self, reason: Failure = protocol.connectionDone) -> None:
        self.done.callback((self.got, reason))


async def _serve_and_connect(reactor: Any, message: str, workdir: str, cert: str, key: str, cafile: str) -> int:
    """The echo server, then a client expecting the right name and one
    expecting a wrong name; returns 0 when the first echoed and the second
    was rejected."""
    from twistls import ClientContextFactory, ServerContextFactory, TLSError, TLSWrappingFactory
    from twistls.commands._echo import _Echo

    server_cf = ServerContextFactory(cert, key)
    port = reactor.listenTCP(0, TLSWrappingFactory(protocol.Factory.forProtocol(_Echo), server_cf), interface="127.0.0.1")
    number = port.getHost().port
    print(f"twistls demo: throwaway CA in {workdir}")
    print(f"twistls demo: TLS echo server on 127.0.0.1:{number}")
    status = 0
    for expected in ("localhost", "wrong.example"):
        print(f"\nclient expecting {expected!r}:")
        client = _Client(message)
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
