"""The connections ``twistls probe`` makes: one :class:`Attempt` per
connection (:func:`_connect`, after a STARTTLS preamble when asked), and,
after a handshake failure, the scan of what the server accepts
(:func:`_accepted`: a bounded number of non-verifying handshakes, each
narrowed to one version, group or suite).
"""

from __future__ import annotations

import logging
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from twisted.internet import defer, error, protocol

from twistls.commands._starttls import ProbeError, _Preamble, _reason

if TYPE_CHECKING:
    from twisted.python.failure import Failure

    from twistls._typing import TLSTransport

#: What the probe keeps of the first bytes a server sends (to recognise a
#: plaintext protocol when the handshake fails).
_FIRST_BYTES = 512
#: Extra handshakes after a handshake failure: at most this many, each given
#: at most this many seconds.
MAX_EXTRA_HANDSHAKES = 24
EXTRA_HANDSHAKE_TIMEOUT = 5.0


@dataclass
class Attempt:
    """The outcome of one connection."""

    address: str | None = None
    info: Any = None  # ConnectionInfo once the handshake was accepted
    error: BaseException | None = None
    transcript: list[str] = field(default_factory=list)
    received: bytes = b""  # the first _FIRST_BYTES bytes the server sent
    client_ca_names: list[str] | None = None  # from the server's CertificateRequest
    ended_after_handshake: BaseException | None = None  # why it ended, if not cleanly

class _Probe(protocol.Protocol):
    """The application side of one probe connection: speaks the STARTTLS
    preamble (if any), waits for the handshake, and records the outcome in
    :attr:`attempt`; ``finished`` fires when the connection is gone."""

    transport: TLSTransport  # type: ignore[assignment]  # a TLSProtocolWrapper (see twistls._typing)
    preamble: _Preamble | None = None

    def __init__(
        self,
        attempt: Attempt,
        finished: defer.Deferred[None],
        *,
        reactor: Any,
        context_factory: Any,
        starttls: str | None,
        linger: float,
    ) -> None:
        self.attempt = attempt
        self.finished = finished
        self.reactor = reactor
        self.context_factory = context_factory
        self.starttls = starttls
        self.linger = linger

    def connectionMade(self) -> None:
        peer = self.transport.getPeer()
        host_text = f"[{peer.host}]" if ":" in peer.host else peer.host
        self.attempt.address = f"{host_text}:{peer.port}"
        if self.starttls is None:
            self.wait_for_handshake()
            return
        self.preamble = _Preamble(self.starttls)
        first = self.preamble.first_command()
        if first is not None:
            self.preamble.transcript.append("C: " + first.decode("ascii"))
            self.transport.write(first + b"\r\n")

    def wait_for_handshake(self) -> None:
        self.transport.when_handshake_done().addCallbacks(self.handshake_done, lambda failure: None)

    def handshake_done(self, info: Any) -> None:
        self.attempt.info = info
        if self.linger > 0:
            self.reactor.callLater(self.linger, self.transport.loseConnection)
        else:
            self.transport.loseConnection()

    def dataReceived(self, data: bytes) -> None:
        if self.preamble is None or self.preamble.upgrade or self.attempt.error is not None:
            return  # after TLS (or a refused preamble): nothing to read
        try:
            commands = self.preamble.receive(data)
        except ProbeError as exc:
            self.attempt.error = exc
            self.transport.abortConnection()
            return
        for command in commands:
            self.transport.write(command + b"\r\n")
        if self.preamble.upgrade:
            self.transport.startTLS(self.context_factory)
            self.wait_for_handshake()

    def connectionLost(self, reason: Failure = protocol.connectionDone) -> None:
        attempt = self.attempt
        if self.preamble is not None:
            attempt.transcript = self.preamble.transcript
        if attempt.error is None and attempt.info is None:
            attempt.error = reason.value
        elif attempt.info is not None and not isinstance(reason.value, error.ConnectionDone):
            attempt.ended_after_handshake = reason.value
        if self.preamble is not None and self.preamble.steps and attempt.error is not None:
            if not isinstance(attempt.error, ProbeError):
                attempt.error = ProbeError(
                    f"the connection ended during the {self.starttls} preamble ({_reason(attempt.error)})"
                )
        if not self.finished.called:
            self.finished.callback(None)


async def _connect(
    reactor: Any,
    host: str,
    port: int,
    context_factory: Any,
    starttls: str | None,
    timeout: float,
    linger: float = 0.0,
) -> Attempt:
    """One connection; ``linger`` seconds are spent after the handshake so that
    TLS 1.3 session tickets (sent after it) arrive for a resumption test."""
    from twisted.internet import endpoints

    from twistls.protocol import TLSWrappingFactory

    attempt = Attempt()
    finished: defer.Deferred[None] = defer.Deferred()
    factory = protocol.Factory()
    factory.protocol = lambda: _Probe(
        attempt, finished, reactor=reactor, context_factory=context_factory, starttls=starttls, linger=linger
    )
    wrapping = TLSWrappingFactory(
        factory, None if starttls else context_factory, start_tls=starttls is not None, clock=reactor
    )
    wrapping.protocol = _recording_wrapper(attempt)
    endpoint = endpoints.HostnameEndpoint(reactor, host, port, timeout=timeout)
    connecting = endpoint.connect(wrapping)  # type: ignore[arg-type]  # a Factory provides IProtocolFactory (zope)
    connected: list[Any] = []

    def on_connect_failed(failure: Any) -> None:
        if attempt.error is None:
            attempt.error = failure.value
        if not finished.called:
            finished.callback(None)

    connecting.addCallbacks(connected.append, on_connect_failed)
    timer = reactor.callLater(timeout, _time_out, attempt, finished, connecting, connected, starttls, timeout)
    try:
        await finished
    finally:
        if timer.active():
            timer.cancel()
    if isinstance(attempt.error, error.ConnectionDone) and attempt.info is not None:
        attempt.error = None
    return attempt


def _time_out(
    attempt: Attempt,
    finished: defer.Deferred[None],
    connecting: defer.Deferred[Any],
    connected: list[Any],
    starttls: str | None,
    timeout: float,
) -> None:
    """End a connection still unfinished after ``timeout`` seconds, naming
    the stage it was in (connecting, the preamble, the handshake)."""
    if finished.called:
        return
    if connected:
        stage = "the STARTTLS preamble" if starttls and not connected[0].tls_started else "the TLS handshake"
        attempt.error = ProbeError(f"timed out after {timeout:g} s during {stage}")
        connected[0].transport.abortConnection()
    else:
        attempt.error = ProbeError(f"timed out after {timeout:g} s while connecting")
        connecting.cancel()


def _recording_wrapper(attempt: Attempt) -> Any:
    """A :class:`~twistls.protocol.TLSProtocolWrapper` that keeps the first
    bytes the server sends and, before its engine is freed, the CA names of
    the server's CertificateRequest, in ``attempt``."""
    from twistls.protocol import TLSProtocolWrapper

    class _Recording(TLSProtocolWrapper):
        def dataReceived(self, data: bytes) -> None:
            if len(attempt.received) < _FIRST_BYTES:
                attempt.received += data[: _FIRST_BYTES - len(attempt.received)]
            super().dataReceived(data)

        def connectionLost(self, reason: Failure | None = None) -> None:
            engine = self._engine
            if engine is not None and engine.client and attempt.client_ca_names is None:
                attempt.client_ca_names = _client_ca_names(engine.ssl_address)
            if reason is None:
                super().connectionLost()
            else:
                super().connectionLost(reason)

    return _Recording


_get_client_ca_list: Any = None


def _client_ca_names(ssl_address: int) -> list[str] | None:
    """The CA names a server sent with its CertificateRequest (as OpenSSL's
    one-line form), ``[]`` for a request without names, ``None`` when the
    client received no request (or none with names, in TLS 1.3)."""
    global _get_client_ca_list
    import ctypes

    from twistls import _openssl

    if not ssl_address:
        return None
    if _get_client_ca_list is None:
        _get_client_ca_list = _openssl._fn(_openssl.libssl, "SSL_get_client_CA_list", ctypes.c_void_p, ctypes.c_void_p)
    stack = _get_client_ca_list(ssl_address)
    if not stack:
        return None
    names = []
    for i in range(min(_openssl.OPENSSL_sk_num(stack), 64)):
        name = _openssl.OPENSSL_sk_value(stack, i)
        buffer = ctypes.create_string_buffer(512)
        text = _openssl.X509_NAME_oneline(name, buffer, len(buffer))
        names.append((text or b"").decode("utf-8", "replace"))
    return names


def _quiet_insecure_warning() -> logging.Filter:
    class _Filter(logging.Filter):
        def filter(self, record: logging.LogRecord) -> bool:
            return "insecure_skip_verify" not in record.getMessage()

    return _Filter()


def unverified_factory(expected: str, **options: Any) -> Any:
    """A non-verifying :class:`~twistls.context.ClientContextFactory` for
    ``expected`` (``insecure_skip_verify=True``), made without the warning it
    logs: the probe labels what it learns through it as unverified.

    Raises:
        ConfigurationError: ``options`` this libssl does not support.
    """
    from twistls.context import ClientContextFactory

    logger = logging.getLogger("twistls")
    quiet = _quiet_insecure_warning()
    logger.addFilter(quiet)
    try:
        return ClientContextFactory(expected, insecure_skip_verify=True, **options)
    finally:
        logger.removeFilter(quiet)


# --- what a server accepts, after a handshake failure ----------------------------

_VERSIONS = ("TLSv1.3", "TLSv1.2")
_GROUPS = ("X25519MLKEM768", "X25519", "P-256", "P-384", "P-521", "X448", "ffdhe2048", "ffdhe3072")
_EXTRA_TLS13_SUITES = ("TLS_AES_128_CCM_SHA256",)
_EXTRA_TLS12_SUITES = ("ECDHE-RSA-AES128-SHA", "ECDHE-ECDSA-AES128-SHA", "AES128-GCM-SHA256", "AES128-SHA")
_WIDE_CIPHERS = "ALL:!aNULL:!eNULL"


class _Scan:
    """Non-verifying handshakes with one server, at most
    :data:`MAX_EXTRA_HANDSHAKES` of them, each within ``timeout``."""

    def __init__(self, reactor: Any, host: str, port: int, expected: str, starttls: str | None, timeout: float) -> None:
        self.reactor, self.host, self.port = reactor, host, port
        self.expected, self.starttls, self.timeout = expected, starttls, timeout
        self.budget = MAX_EXTRA_HANDSHAKES

    def factory(self, **options: Any) -> Any:
        """A context factory narrowed by ``options``; ``None`` when this
        libssl does not know the candidate."""
        from twistls.errors import ConfigurationError

        try:
            return unverified_factory(self.expected, handshake_timeout=self.timeout, session_cache_size=0, **options)
        except ConfigurationError:
            return None

    async def tries(self, options: dict[str, Any]) -> bool | None:
        """Whether a handshake with ``options`` completes; ``None`` when
        not tried (unknown to this libssl, or the budget spent)."""
        made = self.factory(**options)
        if made is None or self.budget <= 0:
            return None
        self.budget -= 1
        attempt = await _connect(self.reactor, self.host, self.port, made, self.starttls, self.timeout)
        return attempt.info is not None


async def _accepted(
    reactor: Any, host: str, port: int, expected: str, starttls: str | None, timeout: float
) -> dict[str, Any]:
    """Which versions, groups and suites the server completes a handshake
    with: one non-verifying handshake per candidate, narrowed to it (at most
    :data:`MAX_EXTRA_HANDSHAKES`, each within ``timeout``)."""
    from twistls.context import DEFAULT_CIPHERS, DEFAULT_CIPHERSUITES

    scan = _Scan(reactor, host, port, expected, starttls, timeout)
    known_groups = [g for g in _GROUPS if scan.factory(groups=g) is not None]
    suites13 = DEFAULT_CIPHERSUITES.split(":") + list(_EXTRA_TLS13_SUITES)
    suites12 = DEFAULT_CIPHERS.split(":") + list(_EXTRA_TLS12_SUITES)
    wide = {"ciphers": _WIDE_CIPHERS, "ciphersuites": ":".join(suites13), "groups": ":".join(known_groups)}
    result: dict[str, Any] = {"versions": {}, "groups": {}, "suites": {}}
    for version in _VERSIONS:
        result["versions"][version] = await scan.tries({**wide, "minimum_version": version, "maximum_version": version})
    accepted = [v for v in _VERSIONS if result["versions"][v]]
    if accepted:
        result["groups"] = await _groups_accepted(scan, wide, accepted[0], known_groups)
        result["suites"] = await _suites_accepted(scan, wide, accepted, suites13, suites12)
    result["accepted_outside_defaults"] = _outside_defaults(result, suites13, suites12)
    result["handshakes"] = MAX_EXTRA_HANDSHAKES - scan.budget
    return result


async def _groups_accepted(scan: _Scan, wide: dict[str, str], version: str, groups: list[str]) -> dict[str, bool | None]:
    """Each of ``groups`` tried alone, with ``version`` (the newest accepted)."""
    pinned = {"minimum_version": version, "maximum_version": version}
    ciphers = "ECDHE:DHE:!aNULL:!eNULL" if version == "TLSv1.2" else _WIDE_CIPHERS
    return {group: await scan.tries({**wide, **pinned, "groups": group, "ciphers": ciphers}) for group in groups}


async def _suites_accepted(
    scan: _Scan, wide: dict[str, str], accepted: list[str], suites13: list[str], suites12: list[str]
) -> dict[str, bool | None]:
    """Each suite tried alone, in each accepted version (TLS 1.3 first)."""
    suites: dict[str, bool | None] = {}
    if "TLSv1.3" in accepted:
        for suite in suites13:
            options = {**wide, "minimum_version": "TLSv1.3", "maximum_version": "TLSv1.3", "ciphersuites": suite}
            suites[suite] = await scan.tries(options)
    if "TLSv1.2" in accepted:
        for suite in suites12:
            options = {**wide, "minimum_version": "TLSv1.2", "maximum_version": "TLSv1.2", "ciphers": suite}
            suites[suite] = await scan.tries(options)
    return suites


def _outside_defaults(result: dict[str, Any], suites13: list[str], suites12: list[str]) -> list[str]:
    """What the server accepted that a twistls client does not offer by default."""
    from twistls.context import default_groups

    defaults = set(default_groups().replace("*", "").replace("/", ":").split(":"))
    defaults |= set(suites13[:3]) | set(suites12[:6]) | set(_VERSIONS)
    offered = [*result["versions"].items(), *result["groups"].items(), *result["suites"].items()]
    return [name for name, ok in offered if ok and name not in defaults]
