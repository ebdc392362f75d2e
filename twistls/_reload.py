"""Reloading server certificates on ``SIGHUP`` (Twisted layer).

Signals reach a Twisted program through its reactor: the handlers here run
:meth:`~twistls.context.ServerContextFactory.reload` in the reactor thread
(``callFromThread``).  This is the only place below ``twistd`` that touches
the reactor and Python's signal handlers for reloads; the context factories
themselves know neither.

Two ways in:

* :func:`reload_on_sighup` (public, ``twistls.reload_on_sighup``): the
  application names its factories and gets a function that restores the
  previous handler.
* :func:`reload_on_sighup_when_running`: one process-wide handler, installed
  when the reactor starts, for the factories of ``twistls:`` server strings
  and of ``twistd twistls`` (held weakly in :data:`sighup_factories`).

A reload that fails is logged by ``reload()`` and keeps the old certificate;
it never stops the other factories.

.. versionadded:: 0.1
"""

from __future__ import annotations

import logging
import threading
import weakref
from typing import TYPE_CHECKING, Any, Callable, Iterable

if TYPE_CHECKING:  # pragma: no cover
    from twistls.context import ServerContextFactory

__all__ = ["reload_on_sighup", "reload_on_sighup_when_running", "reload_each", "sighup_factories"]

log = logging.getLogger("twistls")


def reload_each(factories: Iterable[ServerContextFactory]) -> None:
    """Reload every factory; one that fails (with any exception, logged by
    :meth:`ServerContextFactory.reload`) keeps its old certificate and does
    not stop the others."""
    for factory in list(factories):
        try:
            factory.reload()
        except Exception:  # noqa: S110  # reload() logged it; the old certificate stays
            pass


#: Server factories reloaded on SIGHUP by the process-wide handler (those of
#: ``twistls:`` server strings, and of ``twistd twistls``); weak, so that a
#: factory nobody serves with any more is dropped.
sighup_factories: weakref.WeakSet[ServerContextFactory] = weakref.WeakSet()
_installed: list[Any] = []  # the reactor the handler is scheduled for, while it is


def reload_on_sighup_when_running(factory: ServerContextFactory, reactor: Any) -> None:
    """Reload ``factory`` on every ``SIGHUP`` this process gets while
    ``reactor`` runs (under any twistd plugin).  The handler is installed by
    the reactor's main thread when it starts running (at once if it runs);
    it chains to a handler installed before it.  Without a logging
    configuration of their own, twistls' records then go to Twisted's log
    in the ``twistls`` namespace (``[twistls#error]``), not to stderr."""
    sighup_factories.add(factory)
    if not _installed:
        _installed.append(reactor)
        reactor.callWhenRunning(_install_sighup_handler, reactor)


def _install_sighup_handler(reactor: Any) -> None:
    import signal

    if threading.current_thread() is not threading.main_thread() or not hasattr(signal, "SIGHUP"):
        log.warning("twistls: SIGHUP reloads need the reactor in the main thread; not installed")
        return
    previous = signal.getsignal(signal.SIGHUP)

    def handler(signum: int, frame: Any) -> None:
        reactor.callFromThread(reload_each, sighup_factories)
        if callable(previous):
            previous(signum, frame)

    signal.signal(signal.SIGHUP, handler)
    _log_to_twisted()

    def restore() -> None:
        if signal.getsignal(signal.SIGHUP) is handler:
            signal.signal(signal.SIGHUP, previous)
        _installed.clear()

    reactor.addSystemEventTrigger("after", "shutdown", restore)


class _TwistedLogHandler(logging.Handler):
    """Hands stdlib ``twistls`` records to :mod:`twisted.logger` (namespace ``twistls``)."""

    def emit(self, record: logging.LogRecord) -> None:
        from twisted.logger import Logger, LogLevel

        if record.levelno >= logging.CRITICAL:
            level = LogLevel.critical
        elif record.levelno >= logging.ERROR:
            level = LogLevel.error
        elif record.levelno >= logging.WARNING:
            level = LogLevel.warn
        elif record.levelno >= logging.INFO:
            level = LogLevel.info
        else:
            level = LogLevel.debug
        try:
            message = record.getMessage()
        except Exception:  # a bad format string must not break the caller
            message = str(record.msg)
        Logger(namespace="twistls").emit(level, "{message}", message=message)


def _log_to_twisted() -> None:
    """Send stdlib ``twistls`` records to Twisted's log, unless logging is configured."""
    std = logging.getLogger("twistls")
    if std.hasHandlers():
        return
    std.addHandler(_TwistedLogHandler())
    if std.level == logging.NOTSET:
        std.setLevel(logging.INFO)


def reload_on_sighup(*factories: ServerContextFactory, reactor: Any = None) -> Callable[[], None]:
    """Reload ``factories`` (:meth:`ServerContextFactory.reload`) whenever the
    process gets ``SIGHUP``; the reload runs in the reactor thread, a failure
    is logged and the old certificate kept.  For twistd plugins.

    Args:
        factories: the server context factories to reload.
        reactor: the reactor to reload in (default: the global one).

    Returns:
        A function that restores the previous ``SIGHUP`` handler.

    .. versionadded:: 0.1
    """
    import signal

    if reactor is None:
        from twisted.internet import reactor as default_reactor

        reactor = default_reactor

    def handler(signum: int, frame: Any) -> None:
        reactor.callFromThread(reload_each, factories)

    previous = signal.signal(signal.SIGHUP, handler)

    def restore() -> None:
        signal.signal(signal.SIGHUP, previous)

    return restore
