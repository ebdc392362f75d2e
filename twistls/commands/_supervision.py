"""The services around the listeners of ``twistd twistls``: draining
connections on ``SIGTERM``, reloading certificates on ``SIGHUP``, and the
supervising process of ``--workers N``."""

from __future__ import annotations

import sys
from typing import TYPE_CHECKING, Any

from twisted.application import service

from twistls._workers import DrainService

if TYPE_CHECKING:
    from twistls.tap import _Listening


class _Draining(DrainService):
    """Drains the connections of the ``listeners`` when the process stops
    (their factories are known only once they listen)."""

    def __init__(self, listeners: list[_Listening], drain_timeout: float) -> None:
        super().__init__([], drain_timeout)
        self.listeners = listeners

    def stopService(self) -> Any:
        self.factories = [f for listener in self.listeners for f in listener.factories()]
        return super().stopService()


class _ReloadOnSighup(service.Service):
    """While running, ``SIGHUP`` reloads the server certificates and keys from
    their files (new connections get them; a failed reload keeps the old ones
    and is logged).  It uses the same process-wide handler as every
    ``twistls:`` server string, so each factory is reloaded once per signal."""

    def __init__(self, factories: list[Any]) -> None:
        self.factories = factories

    def startService(self) -> None:
        from twisted.internet import reactor

        from twistls.context import _reload_on_sighup_when_running

        service.Service.startService(self)
        for factory in self.factories:
            _reload_on_sighup_when_running(factory, reactor)

    def stopService(self) -> None:
        from twistls.context import _sighup_factories

        service.Service.stopService(self)
        for factory in self.factories:
            _sighup_factories.discard(factory)


def _server_factories(*candidates: Any) -> list[Any]:
    found: list[Any] = []
    for candidate in candidates:
        factory = getattr(candidate, "context_factory", candidate)
        if callable(getattr(factory, "reload", None)) and factory not in found:
            found.append(factory)
    return found


class _Supervising(service.MultiService):
    """The twistd process of ``--workers N``: runs the workers, forwards SIGHUP."""

    def __init__(self, supervisor: Any) -> None:
        super().__init__()  # type: ignore[no-untyped-call]  # unannotated in Twisted
        self.supervisor = supervisor
        supervisor.setServiceParent(self)

    def startService(self) -> None:
        super().startService()  # type: ignore[no-untyped-call]  # unannotated in Twisted
        self.supervisor.install_signal_handlers()


def _worker_command(arguments: list[str]) -> list[str]:
    """``twistd -n twistls ...`` as a worker: the same arguments, ``--workers``
    included (it makes the worker listen with ``SO_REUSEPORT``); the
    ``TWISTLS_WORKER`` variable the supervisor sets keeps it from
    supervising in turn.

    A worker leaves its supervisor's process group first: a signal sent to
    the group (Ctrl-C in a terminal, ``kill -- -PGID``, ``timeout``) then
    reaches the supervisor alone, which forwards it once; a worker signalled
    twice would log a ReactorNotRunning traceback.  A worker still ends with
    its supervisor (see EndWithSupervisor)."""
    launcher = "import os, sys; os.setpgrp(); from twisted.scripts.twistd import run; sys.argv[0] = 'twistd'; run()"
    return [sys.executable, "-c", launcher, "--nodaemon", "--pidfile=", "twistls", *arguments]

