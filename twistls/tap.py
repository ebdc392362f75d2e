"""``twistd twistls``: a TLS-terminating proxy and a TLS/STARTTLS echo server.

Registered by ``twisted/plugins/twistls_service.py``.  Sub-commands:

``proxy``
    ``twistd -n twistls proxy --listen twistls:8443:certificate=server.pem
    --connect tcp:127.0.0.1:8080`` accepts TLS and forwards the plaintext to
    a backend (stunnel's server mode).  The reverse,
    ``--listen tcp:8080:interface=127.0.0.1 --connect twistls:host=db.example:port=443:caFile=ca.pem``,
    accepts plaintext and connects out over verified TLS (stunnel's client
    mode).  Any endpoint strings work on either side.  The backend is
    dialled only after the incoming TLS handshake succeeded; bytes flow only
    after the outgoing TLS connection was verified; each side's reading is
    paused while the other side's send buffer is full (flow control both
    ways); a close on one side closes the other cleanly (close_notify).

``echo``
    A TLS echo server for testing clients: ``--listen`` (a server endpoint
    string) or ``--certificate``/``--private-key``/``--port``/``--interface``;
    with ``--starttls-port`` it also listens in the clear, where a client
    sends ``STARTTLS\\r\\n``, reads ``OK begin TLS\\r\\n``, and then handshakes;
    after that everything is echoed.  The STARTTLS port always uses the TLS
    port's policy (certificate, ``--client-ca``, timeouts, truncation), so
    every option reaches every port: with ``--listen twistls:...``,
    ``--client-ca`` is added to that string as ``caFile=``, and
    ``--certificate``/``--private-key`` (a second certificate) are refused.

Options that could reach only some listeners, or none (``--client-ca`` or a
timeout with a non-``twistls:`` ``--listen``), are refused rather than
ignored, and so is any endpoint string that gives a key twice.

Bad options (a missing certificate file, a key that does not match the
certificate, an unknown endpoint keyword) end twistd with exit status 1 and
one line naming the option and the file (no usage dump), and so does a port
that cannot be opened.  ``SIGHUP`` reloads every TLS certificate (the same
process-wide handler as every ``twistls:`` string, see
:mod:`twistls.context`).  ``--passphrase-file`` opens encrypted keys;
``--proxy-protocol`` reads a PROXY v1/v2 header before the handshake.

This module is what the twistd plugin names: :class:`Options` and
:func:`makeService` (and the listeners they start); the sub-commands' options
and protocols are in :mod:`twistls.commands` (``_echo``, ``_proxy``, the
shared option parsing in ``_tapoptions``, draining, reloading and
``--workers`` in ``_supervision``).

.. versionadded:: 0.1
"""

from __future__ import annotations

import os
import sys
from typing import Any

from twisted.application import service
from twisted.application.internet import StreamServerEndpointService
from twisted.internet.protocol import Factory
from twisted.python import usage

from twistls.commands._echo import EchoOptions, _Echo, _StartTLSEcho
from twistls.commands._proxy import ProxyOptions, _ProxyFactory
from twistls.commands._supervision import _Draining, _ReloadOnSighup, _server_factories, _Supervising, _worker_command
from twistls.commands._tapoptions import log

__all__ = ["Options", "makeService", "EchoOptions", "ProxyOptions"]


class Options(usage.Options):
    """``twistd twistls``."""

    synopsis = "(proxy | echo) [options]"
    longdesc = (
        "twistls services: 'proxy' terminates TLS in front of a plaintext backend (or "
        "originates verified TLS for a plaintext client); 'echo' is a TLS and STARTTLS "
        "echo server for testing clients. Run 'twistd twistls proxy --help' or "
        "'twistd twistls echo --help' for their options."
    )
    subCommands = [
        ["proxy", None, ProxyOptions, "TLS-terminating proxy (and the reverse) between two endpoints"],
        ["echo", None, EchoOptions, "TLS echo server, optionally with a STARTTLS plaintext port"],
    ]

    def opt_version(self) -> None:
        """Print the versions of twistls, Twisted and OpenSSL, and exit."""
        from twistls.commands.cli import version_text

        print(version_text())
        raise SystemExit(0)

    def postOptions(self) -> None:
        if self.subCommand is None:
            raise usage.UsageError("choose a sub-command: proxy or echo (see --help)")

    def parseOptions(self, options: list[str] | None = None) -> None:
        """Parse; under ``twistd`` (which sets ``parent``) a bad option ends
        the process with one line naming it, instead of twistd's full usage
        text followed by the message.

        Raises:
            usage.UsageError: a bad option, when not run by twistd.
            SystemExit: a bad option under twistd (status 1), or ``--help``.
        """
        #: The arguments as given (the supervisor of --workers runs its workers with them).
        self.arguments = list(sys.argv[1:] if options is None else options)
        try:
            super().parseOptions(options)  # type: ignore[no-untyped-call]  # usage.Options is unannotated
        except usage.UsageError as exc:
            if getattr(self, "parent", None) is None:
                raise
            command = " ".join(["twistd twistls", *([self.subCommand] if self.subCommand else [])])
            raise SystemExit(f"{command}: {' '.join(str(exc).split())}") from None


class _Listening(StreamServerEndpointService):
    """Listens on ``endpoint``; a port that cannot be opened (in use, no
    permission) ends twistd at once with one line naming it, instead of a
    logged error and a server that serves nothing."""

    def __init__(self, option: str, endpoint: Any, factory: Any, *, starttls_of: Any = None) -> None:
        super().__init__(endpoint, factory)  # type: ignore[no-untyped-call]  # unannotated in Twisted
        self.option = option
        #: The context factory a STARTTLS port upgrades with (its status is logged on start).
        self.starttls_of = starttls_of

    def privilegedStartService(self) -> None:
        from twisted.internet.error import CannotListenError

        self._raiseSynchronously = True
        try:
            super().privilegedStartService()  # type: ignore[no-untyped-call]  # unannotated in Twisted
            waiting = self._waitingForPort
            if waiting is not None:
                waiting.addCallback(self._listening)
        except CannotListenError as exc:
            where = f"{exc.interface or '*'}:{exc.port}"
            reason = getattr(exc.socketError, "strerror", None) or str(exc.socketError)
            log.critical("{option}: cannot listen on {where}: {reason}", option=self.option, where=where, reason=reason)
            raise SystemExit(1) from None

    port: Any = None

    def _listening(self, port: Any) -> Any:
        self.port = port
        if self.starttls_of is not None:  # a twistls: endpoint logs its own
            from twistls.endpoints import log_serving

            log_serving(port, self.starttls_of, what="STARTTLS", warn=False)  # the TLS port warned
        return port

    def factories(self) -> list[Any]:
        """The factory of the listening port (whose ``protocols`` are its connections)."""
        factory = getattr(self.port, "factory", None)
        return [factory] if factory is not None else []


def makeService(options: Options) -> service.MultiService:
    """Build the service for ``twistd twistls``; ``SIGHUP`` reloads certificates.
    With ``--workers N`` (N > 1) this process supervises N workers instead."""
    from twistls._workers import WORKER_ENV, EndWithSupervisor, WorkerSupervisor

    sub = options.subOptions
    if sub["workers"] > 1 and WORKER_ENV not in os.environ:
        return _Supervising(
            WorkerSupervisor(_worker_command(options.arguments), sub["workers"], stop_timeout=sub["drain-timeout"] + 10)
        )
    top = service.MultiService()
    if options.subCommand == "proxy":
        listeners = _proxy_services(sub, top)
    else:
        listeners = _echo_services(sub, top)
    _Draining(listeners, sub["drain-timeout"]).setServiceParent(top)  # type: ignore[no-untyped-call]
    if sub["workers"] > 1:  # a worker of a supervisor: it ends with it
        EndWithSupervisor().setServiceParent(top)  # type: ignore[no-untyped-call]
    return top


def _proxy_services(sub: usage.Options, top: service.MultiService) -> list[_Listening]:
    """``proxy``: the listener, and the reload of its certificates on ``SIGHUP``."""
    listening = _Listening(f"--listen {sub['listen']}", sub["listen-endpoint"], _ProxyFactory(sub["connect-endpoint"]))
    listening.setServiceParent(top)  # type: ignore[no-untyped-call]  # Service.setServiceParent is unannotated
    reloader = _ReloadOnSighup(_server_factories(sub["listen-endpoint"]))
    reloader.setServiceParent(top)  # type: ignore[no-untyped-call]  # Service.setServiceParent is unannotated
    return [listening]


def _echo_services(sub: usage.Options, top: service.MultiService) -> list[_Listening]:
    """``echo``: the reload on ``SIGHUP``, the TLS listener and the STARTTLS one."""
    reloader = _ReloadOnSighup(_server_factories(sub["listen-endpoint"], sub["context-factory"]))
    reloader.setServiceParent(top)  # type: ignore[no-untyped-call]  # Service.setServiceParent is unannotated
    where = f"--listen {sub['listen']}" if sub["listen"] else f"--port {sub['port']}"
    listeners = [_Listening(where, sub["listen-endpoint"], Factory.forProtocol(_Echo))]
    listeners[0].setServiceParent(top)  # type: ignore[no-untyped-call]  # Service.setServiceParent is unannotated
    if sub["starttls-endpoint"] is not None:
        listeners.append(_starttls_listening(sub))
        listeners[1].setServiceParent(top)  # type: ignore[no-untyped-call]  # Service.setServiceParent is unannotated
    return listeners


def _starttls_listening(sub: usage.Options) -> _Listening:
    """The plaintext port of ``echo --starttls-port``, with the TLS port's
    whole policy: its context factory, idle timeout, truncation and PROXY
    header."""
    from twistls.protocol import TLSWrappingFactory

    tls = sub["listen-endpoint"]  # a TLSServerEndpoint: STARTTLS needs a context factory
    plain = Factory.forProtocol(_StartTLSEcho)
    plain.context_factory = sub["context-factory"]  # type: ignore[attr-defined]
    wrapping: Any = TLSWrappingFactory(
        plain, None, start_tls=True, idle_timeout=tls.idle_timeout, allow_truncation=tls.allow_truncation
    )
    if tls.proxy_protocol:  # the STARTTLS port takes the TLS port's whole policy
        from twisted.internet import reactor

        from twistls.endpoints import _PROXY_HEADER_TIMEOUT, _ProxyHeaderFactory

        timeout = sub["context-factory"].handshake_timeout or _PROXY_HEADER_TIMEOUT
        wrapping = _ProxyHeaderFactory(wrapping, clock=reactor, timeout=timeout)
    return _Listening(
        f"--starttls-port {sub['starttls-port']}", sub["starttls-endpoint"], wrapping,
        starttls_of=sub["context-factory"],
    )
