"""``twistd twistls echo``: its options and the echo protocols (TLS from
the first byte, and the plaintext port that switches to TLS on
``STARTTLS``)."""

from __future__ import annotations

import os
from typing import TYPE_CHECKING, Any

from twisted.internet.protocol import Protocol
from twisted.protocols.basic import LineReceiver
from twisted.python import usage
from twisted.python.failure import Failure

from twistls.commands._tapoptions import (
    _IDLE_HELP,
    _PASSPHRASE_HELP,
    _PROXY_PROTOCOL_HELP,
    _SCALE_OPTIONS,
    _TIMEOUT_HELP,
    _add_proxy_protocol,
    _blame,
    _check_passphrase_file,
    _check_scale_options,
    _is_no,
    _keys,
    _plain_endpoint,
    _positive_idle_seconds,
    _positive_seconds,
    _refuse_idle_options,
    _refuse_second_passphrase,
    _scale_defaults,
    _server_endpoint,
    _timeouts,
    _tls_endpoint,
    log,
)

if TYPE_CHECKING:
    from twistls._typing import TLSTransport, Transport


class _Echo(Protocol):
    transport: Transport  # type: ignore[assignment]  # set by makeConnection (see twistls._typing)

    def dataReceived(self, data: bytes) -> None:
        self.transport.write(data)


class _StartTLSEcho(LineReceiver):
    """Plaintext line protocol: ``STARTTLS`` upgrades to TLS, then echo.

    The cleartext phase is bounded by the TLS port's handshake timeout: a
    client that has not sent ``STARTTLS`` by then is told so and closed (the
    TLS handshake then has its own timeout)."""

    transport: TLSTransport  # type: ignore[assignment]  # set by makeConnection (see twistls._typing)
    delimiter = b"\r\n"
    MAX_LENGTH = 1024
    _deadline: Any = None

    def connectionMade(self) -> None:
        timeout = self.factory.context_factory.handshake_timeout
        if timeout is not None:
            from twisted.internet import reactor

            self._deadline = reactor.callLater(timeout, self._no_starttls, timeout)

    def _no_starttls(self, timeout: float) -> None:
        self._deadline = None
        log.info(
            "STARTTLS port: {peer} sent no STARTTLS within {timeout:g} s; closing",
            peer=str(self.transport.getPeer()),
            timeout=timeout,
        )
        self.sendLine(b"ERR timed out waiting for STARTTLS")  # type: ignore[no-untyped-call]  # LineReceiver is unannotated
        self.transport.loseConnection()

    def _cancel_deadline(self) -> None:
        deadline, self._deadline = self._deadline, None
        if deadline is not None and deadline.active():
            deadline.cancel()

    def connectionLost(self, reason: Failure = None) -> None:  # type: ignore[assignment]
        self._cancel_deadline()
        super().connectionLost(reason)

    def lineReceived(self, line: bytes) -> None:
        if line.strip().upper() != b"STARTTLS":
            self.sendLine(b"ERR send STARTTLS first")  # type: ignore[no-untyped-call]  # LineReceiver is unannotated
            return
        self._cancel_deadline()  # from here the TLS handshake timeout applies
        self.sendLine(b"OK begin TLS")  # type: ignore[no-untyped-call]  # LineReceiver is unannotated
        # Bytes the client sent after STARTTLS in the clear are dropped, not
        # fed into the TLS stream (the STARTTLS command-injection class).
        self.clearLineBuffer()  # type: ignore[no-untyped-call]  # LineReceiver is unannotated
        self.transport.startTLS(self.factory.context_factory)
        self.setRawMode()  # type: ignore[no-untyped-call]  # LineReceiver is unannotated

    def rawDataReceived(self, data: bytes) -> None:
        self.transport.write(data)

    def lineLengthExceeded(self, line: bytes) -> None:
        self.sendLine(b"ERR line too long")  # type: ignore[no-untyped-call]  # LineReceiver is unannotated
        self.transport.loseConnection()


class EchoOptions(usage.Options):
    """``twistd twistls echo``."""

    synopsis = (
        "[--listen SERVER-ENDPOINT | --certificate FILE [--private-key FILE] [--port N] [--interface ADDR]] "
        "[--starttls-port N] [--client-ca FILE] [--handshake-timeout SECONDS] [--idle-timeout SECONDS]"
    )
    longdesc = (
        "A TLS echo server for testing clients. Everything a client sends after the "
        "handshake is sent back. With --starttls-port it also listens in the clear: "
        "a client sends 'STARTTLS\\r\\n', the server answers 'OK begin TLS\\r\\n' and the "
        "connection switches to TLS, then echoes."
    )
    optParameters = [
        ["listen", "l", None, "Server endpoint string for TLS, instead of --certificate/--private-key/--port "
         "(default: twistls:PORT:certificate=...:privateKey=...:interface=INTERFACE built from those options); "
         "the STARTTLS port uses its policy."],
        ["certificate", "c", None, "PEM server certificate (then intermediates); required unless --listen "
         "is given (which carries its own certificate)."],
        ["private-key", "k", None, "PEM private key [default: in the certificate file]."],
        ["port", "p", 8443, "TLS port when --listen is not given.", int],
        ["interface", "i", "127.0.0.1", "Address to listen on for --port and --starttls-port."],
        ["starttls-port", None, None, "Also listen in the clear on this port and offer STARTTLS "
         "[default: off].", int],
        ["client-ca", None, None, "Require client certificates issued by the CAs in this PEM file, on the "
         "TLS port and the STARTTLS port (added to a twistls: --listen as caFile=) "
         "[default: no client certificates]."],
        ["handshake-timeout", "t", None, _TIMEOUT_HELP, _positive_seconds],
        ["idle-timeout", None, None, _IDLE_HELP, _positive_idle_seconds],
        ["passphrase-file", None, None, _PASSPHRASE_HELP],
        *_SCALE_OPTIONS,
    ]
    optFlags = [["proxy-protocol", None, _PROXY_PROTOCOL_HELP + " Applies to the --starttls-port too."]]

    def postOptions(self) -> None:
        from twistls.endpoints import TLSServerEndpoint

        timeout, idle, client_ca = self["handshake-timeout"], self["idle-timeout"], self["client-ca"]
        if client_ca is not None and not os.path.isfile(os.path.expanduser(client_ca)):
            raise usage.UsageError(f"--client-ca {client_ca!r}: no such file")
        if self["passphrase-file"] is not None:
            _check_passphrase_file(self["passphrase-file"])
        _check_scale_options(self)
        if self["listen"]:
            endpoint = self._listen_endpoint(timeout, idle, client_ca)
        else:
            endpoint = self._own_endpoint(timeout, idle, client_ca)
        self["listen-endpoint"] = endpoint
        # The STARTTLS port takes the TLS port's whole policy: its context
        # factory (certificate, client CAs, handshake timeout) and its
        # per-connection settings.
        self["context-factory"] = endpoint.context_factory if isinstance(endpoint, TLSServerEndpoint) else None
        self["starttls-endpoint"] = None
        if self["starttls-port"] is not None:
            if not 0 <= self["starttls-port"] <= 65535:
                raise usage.UsageError(f"--starttls-port {self['starttls-port']} is not a TCP port")
            if self["context-factory"] is None:
                raise usage.UsageError("--starttls-port needs --certificate (or --listen twistls:...)")
            self["starttls-endpoint"] = _plain_endpoint(
                self["starttls-port"], self["interface"], reuse_port=self["workers"] > 1
            )

    def _listen_endpoint(self, timeout: float | None, idle: float | None, client_ca: str | None) -> Any:
        """The endpoint of ``--listen``, with every TLS option added to it, or refused."""
        for option in ("certificate", "private-key"):
            if self[option]:
                raise usage.UsageError(
                    f"--{option} conflicts with --listen (the TLS port's certificate): give certificate=/privateKey= "
                    "in a twistls: --listen string, or use --port instead of --listen"
                )
        keys = _keys("--listen", self["listen"])
        if keys is None:
            if client_ca is not None:
                raise usage.UsageError(
                    "--client-ca needs a twistls: --listen string (or --certificate and --port), "
                    f"not {self['listen']!r}, so that every port requires client certificates"
                )
            _refuse_idle_options("--listen is not a twistls: string", timeout, idle)
            if self["passphrase-file"] is not None:
                raise usage.UsageError(f"--passphrase-file needs a twistls: --listen string, not {self['listen']!r}")
        elif client_ca is not None:
            for key in ("caFile", "caPath"):
                if key in keys:
                    raise usage.UsageError(
                        f"--client-ca conflicts with {key}= in --listen {self['listen']!r}: name the client CAs once"
                    )
            if "requireClientCertificate" in keys and _is_no(keys["requireClientCertificate"]):
                raise usage.UsageError(
                    "--client-ca requires client certificates, but --listen says requireClientCertificate="
                    f"{keys['requireClientCertificate']}: leave one out"
                )
        defaults = {**_timeouts(timeout, idle), "caFile": client_ca}
        if keys is not None and self["passphrase-file"] is not None:
            defaults["passphraseFile"] = _refuse_second_passphrase("--listen", self["listen"], keys, self["passphrase-file"])
        if self["proxy-protocol"]:
            _add_proxy_protocol("--listen", self["listen"], keys, defaults)
        _scale_defaults(self, "--listen", self["listen"], keys, defaults)
        return _server_endpoint("--listen", self["listen"], defaults)

    def _own_endpoint(self, timeout: float | None, idle: float | None, client_ca: str | None) -> Any:
        """The TLS endpoint built from ``--certificate``/``--private-key``/``--port``."""
        from twistls.context import ServerContextFactory
        from twistls.endpoints import _passphrase_file, _refuse_unreadable_encrypted_key
        from twistls.errors import ConfigurationError

        if not self["certificate"]:
            if self["private-key"] or client_ca or self["passphrase-file"]:
                raise usage.UsageError("--private-key, --client-ca and --passphrase-file need --certificate")
            raise usage.UsageError("echo needs --certificate (or --listen twistls:PORT:certificate=FILE)")
        options: dict[str, Any] = {}
        if timeout is not None:
            options["handshake_timeout"] = timeout
        if client_ca:
            options["client_cafile"] = client_ca
        if self["ticket-key-file"] is not None:
            options["ticket_key_file"] = self["ticket-key-file"]
        passphrase = self["passphrase-file"]
        key_option, key_path = (
            ("--private-key", self["private-key"]) if self["private-key"] else ("--certificate", self["certificate"])
        )
        try:
            if passphrase is not None:
                options["passphrase"] = _passphrase_file("passphraseFile", passphrase, label=f"--passphrase-file {passphrase!r}")
            _refuse_unreadable_encrypted_key(
                os.path.expanduser(key_path), passphrase is not None, label="", option="--passphrase-file FILE"
            )
            context_factory = ServerContextFactory(self["certificate"], self["private-key"], **options)
        except ConfigurationError as exc:
            raise _blame(exc, (
                ("--ticket-key-file", self["ticket-key-file"]),
                ("--passphrase-file", passphrase),
                ("--client-ca", client_ca),
                (key_option, key_path),
                ("--certificate", self["certificate"]),
            )) from None
        if not 0 <= self["port"] <= 65535:
            raise usage.UsageError(f"--port {self['port']} is not a TCP port")
        return _tls_endpoint(
            context_factory, self["port"], self["interface"], idle, bool(self["proxy-protocol"]), self["workers"] > 1
        )

