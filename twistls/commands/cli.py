"""``python -m twistls`` / ``twistls``: the command line.

Sub-commands:

* ``probe HOST[:PORT]``: connect with twistls' secure defaults (optionally
  after a STARTTLS preamble) and report what the server presented and
  negotiated; exit 0 only when the peer verified.
* ``verify CERT``: verify a certificate offline exactly as a twistls client
  would; exit 0 only when it would be accepted.
* ``mkcert [NAMES...]``: a throwaway CA and a server certificate for
  development.
* ``demo``: ``twistd twistls echo`` on 127.0.0.1 with a CA made by
  ``mkcert``, probed once as it should be (verified) and once with a wrong
  expected name (rejected), then stopped.

Heavy imports (Twisted, M2Crypto, cryptography) happen inside the
sub-commands so that ``--help`` returns at once.
"""

from __future__ import annotations

import argparse
import sys
from typing import TYPE_CHECKING, Sequence

if TYPE_CHECKING:
    from typing import TypeAlias

    _Subparsers: TypeAlias = "argparse._SubParsersAction[argparse.ArgumentParser]"

STARTTLS_PROTOCOLS = ("smtp", "imap", "pop3", "ftp", "plain-line")


def _positive_float(text: str) -> float:
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r} is not a number of seconds") from None
    if not value > 0:
        raise argparse.ArgumentTypeError(f"{text!r}: the timeout must be > 0 seconds")
    return value


def _depth(text: str) -> int:
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r} is not a whole number") from None
    if value < 0:
        raise argparse.ArgumentTypeError(f"{text!r}: the depth must be >= 0 (0: a leaf issued by the trust anchor itself)")
    return value


def _add_trust_options(container: argparse._ActionsContainer) -> None:
    """``--cafile`` and ``--capath``, as ``probe`` and ``verify`` both take them."""
    container.add_argument("--cafile", metavar="F", help="PEM file of trusted CAs (instead of the system store)")
    container.add_argument("--capath", metavar="D", help="hashed directory of trusted CAs (instead of the system store)")


def version_text() -> str:
    """``twistls 0.1.0 (Twisted 26.10.0, M2Crypto 0.51.0, OpenSSL 3.0.19 ...)``:
    what ``twistls --version`` and ``twistd twistls --version`` print."""
    try:
        import M2Crypto
        import twisted
        from M2Crypto import m2

        from twistls import __version__

        openssl = str(getattr(m2, "OPENSSL_VERSION_TEXT", "OpenSSL (version unknown)"))
        return f"twistls {__version__} (Twisted {twisted.__version__}, M2Crypto {M2Crypto.__version__}, {openssl})"
    except Exception:  # a broken install still says which twistls it is
        from twistls import __version__

        return f"twistls {__version__}"


class _VersionAction(argparse.Action):
    """``--version``: :func:`version_text` (computed only when asked for)."""

    def __init__(self, option_strings: list[str], dest: str = argparse.SUPPRESS, **kwargs: object) -> None:
        super().__init__(option_strings, dest, nargs=0, default=argparse.SUPPRESS,
                         help="print the versions of twistls, Twisted, M2Crypto and OpenSSL, and exit")

    def __call__(self, parser: argparse.ArgumentParser, namespace: argparse.Namespace, values: object,
                 option_string: str | None = None) -> None:
        print(version_text())
        parser.exit()


_PROBE_DESCRIPTION = (
    "Connect to HOST[:PORT] over TCP with twistls' secure defaults (chain verified against "
    "the system trust store or --cafile/--capath, name checked by the twistls Checker), "
    "optionally after a STARTTLS preamble, and report the address, the certificate and "
    "its names, the chain with each certificate's SHA-256 fingerprint and SPKI pin "
    "(sha256/<base64>, the value pins= takes), the protocol version, cipher, compression, "
    "ALPN, session reuse, whether the server asks for a client certificate (and which CAs "
    "it accepts), and the verdict.  After a handshake failure it says which versions, "
    "groups and suites the server does accept (a bounded number of extra, non-verifying "
    "handshakes).  --cafile, --certificate and --private-key may be /dev/fd/N or another "
    "stream.  Exit status 0 only when the peer verified; 1 when it was rejected; 2 for bad "
    "arguments; 3 when no TLS session could be tried (connection refused, timeout, "
    "STARTTLS refused); 4 when the port answered in a plaintext protocol (the report "
    "names it and the --starttls PROTO to use)."
)


def _parser() -> argparse.ArgumentParser:
    """The parser of every sub-command (building it imports nothing heavy)."""
    parser = argparse.ArgumentParser(
        prog="twistls",
        description="Secure-by-default TLS for Twisted, built on M2Crypto.",
    )
    parser.add_argument("--version", action=_VersionAction)
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")
    for add in (_add_probe, _add_verify, _add_mkcert, _add_mkticketkey, _add_demo):
        add(sub)
    return parser


def _add_probe(sub: _Subparsers) -> None:
    probe = sub.add_parser(
        "probe",
        help="connect to a TLS server with the secure defaults and report what it presents",
        description=_PROBE_DESCRIPTION,
    )
    probe.add_argument(
        "target",
        metavar="HOST[:PORT]",
        help="host name or IP address, with an optional port; IPv6 as [addr]:port. Default port 443, "
        "or the protocol's usual one with --starttls (smtp 25, imap 143, pop3 110, ftp 21)",
    )
    probe.add_argument(
        "--starttls",
        choices=STARTTLS_PROTOCOLS,
        help="speak this protocol's cleartext preamble, then upgrade to TLS "
        "(plain-line: send 'STARTTLS' and wait for one line; needs an explicit port).  Without it, "
        "a port that greets in plaintext ends the probe with exit status 4 and the PROTO to use",
    )
    _add_trust_options(probe)
    probe.add_argument(
        "--certificate",
        metavar="F",
        help="PEM client certificate (chain) to send when the server asks for one (mutual TLS)",
    )
    probe.add_argument(
        "--private-key",
        metavar="F",
        help="PEM private key of --certificate (default: in the same file)",
    )
    probe.add_argument(
        "--passphrase-file",
        metavar="F",
        help="file holding the passphrase of an encrypted --private-key (one trailing newline is "
        "ignored); the passphrase itself is never taken on the command line",
    )
    probe.add_argument(
        "--servername",
        metavar="N",
        help="the name the certificate must hold and that is sent as SNI (default: HOST)",
    )
    probe.add_argument(
        "--alpn",
        metavar="PROTOS",
        help="offer these ALPN protocols, comma-separated (e.g. h2,http/1.1); default: none",
    )
    probe.add_argument("--json", action="store_true", help="print the report as one JSON object")
    probe.add_argument(
        "--timeout",
        metavar="S",
        type=_positive_float,
        default=10.0,
        help="seconds allowed for each connection (connect, preamble, handshake); default %(default)s",
    )
    probe.add_argument(
        "--no-reconnect",
        action="store_true",
        help="do not reconnect to test session resumption after a verified connection",
    )


def _add_verify(sub: _Subparsers) -> None:
    verify = sub.add_parser(
        "verify",
        help="verify a certificate offline exactly as a twistls client would",
        description=(
            "Verify CERT (PEM; a leaf optionally followed by the intermediates a server would send) "
            "with OpenSSL's X509_verify_cert set up as a twistls client sets it up (same trust "
            "loading, depth, serverAuth purpose, security level) and the same Checker for the "
            "name.  Prints every problem found; exit status 0 only when a client would accept it, "
            "1 when it would be rejected, 2 for bad arguments or unreadable files."
        ),
    )
    verify.add_argument("certificate", metavar="CERT", help="the certificate file (PEM or DER)")
    verify.add_argument("--chain", metavar="FILE", help="PEM file of intermediates the server would send")
    _add_trust_options(verify.add_mutually_exclusive_group())
    who = verify.add_mutually_exclusive_group(required=True)
    who.add_argument("--host", metavar="NAME", help="the DNS name a client would expect")
    who.add_argument("--ip", metavar="ADDR", help="the IP address a client would expect")
    verify.add_argument(
        "--at",
        metavar="TIME",
        help="verify as of this ISO 8601 time (e.g. 2030-01-31T12:00:00Z; or @SECONDS since the epoch), "
        "like openssl verify -attime",
    )
    verify.add_argument(
        "--depth", metavar="N", type=_depth, default=None, help="maximum chain depth (client default: 9)"
    )
    verify.add_argument(
        "--legacy-common-name",
        action="store_true",
        help="accept a commonName match on certificates without any subjectAltName "
        "(the client's allow_common_name=True)",
    )
    verify.add_argument(
        "--crlfile",
        metavar="F",
        help="PEM file of CRLs to check the certificate against, as a client with crlfile=F would",
    )
    verify.add_argument(
        "--pki-profile",
        choices=("strict", "rfc5280"),
        default="strict",
        help="the client's pki_profile: 'strict' (default: pyca's path builder and the strict PKI profile "
        "must accept too; every rule broken is listed) or 'rfc5280' (OpenSSL's checks and the Checker only)",
    )
    verify.add_argument("--json", action="store_true", help="print the report as one JSON object")


def _add_mkcert(sub: _Subparsers) -> None:
    mkcert = sub.add_parser(
        "mkcert",
        help="make a throwaway CA and a server certificate for development",
        description=(
            "Write ca.pem (the root CA to trust), server.pem (the server certificate followed by "
            "its intermediate CA) and server.key (mode 0600) for NAMES into a directory, using "
            "the cryptography library.  The CA keys are not kept.  Each run makes a CA with a subject and "
            "key identifiers of its own, so the ca.pem of several runs can share one trust file."
        ),
    )
    mkcert.add_argument(
        "names",
        metavar="NAMES",
        nargs="*",
        help="DNS names and IP addresses for the certificate (default: localhost 127.0.0.1 ::1)",
    )
    mkcert.add_argument("--dir", metavar="D", help="directory to write into (default: a new temporary directory)")
    mkcert.add_argument(
        "--client",
        metavar="NAME",
        action="append",
        default=[],
        help="also issue client.pem/client.key for NAME, for mutual TLS (repeatable)",
    )
    mkcert.add_argument("--days", type=int, default=30, help="validity in days (default %(default)s)")
    mkcert.add_argument(
        "--force",
        action="store_true",
        help="replace every file mkcert writes in the directory (and remove an earlier run's client.pem/client.key)",
    )


def _add_mkticketkey(sub: _Subparsers) -> None:
    mkticketkey = sub.add_parser(
        "mkticketkey",
        help="make or rotate a session-ticket key file shared by server processes",
        description=(
            "Write FILE (mode 0600, atomically) with a new random session-ticket key.  With "
            "--rotate, put a new key first in an existing FILE and drop the oldest beyond --keep: "
            "servers given ticketKeyFile=FILE (--ticket-key-file) encrypt new tickets under the "
            "first key and still resume tickets under the others.  Reload them (SIGHUP) after a rotation."
        ),
    )
    mkticketkey.add_argument("file", metavar="FILE", help="the key file")
    mkticketkey.add_argument("--rotate", action="store_true", help="add a new first key to an existing file")
    mkticketkey.add_argument("--keep", type=int, default=3, help="keys kept by --rotate, 2..8 (default %(default)s)")
    mkticketkey.add_argument("--force", action="store_true", help="replace an existing FILE with one new key")


def _add_demo(sub: _Subparsers) -> None:
    demo = sub.add_parser(
        "demo",
        help="twistd twistls echo on 127.0.0.1 with a mkcert CA, probed (verified) and with a wrong name (rejected)",
        description=(
            "Make a throwaway CA with mkcert, run 'twistd -n twistls echo' on 127.0.0.1, probe it "
            "(verified), probe it expecting a wrong name (rejected, with the reason), stop it.  "
            "Falls back to an in-process server when twistd is not available."
        ),
    )
    demo.add_argument("--message", default="hello over twistls", help="text the in-process client sends (default: %(default)s)")
    demo.add_argument("--in-process", action="store_true", help="skip twistd; serve from this process")


def _split_target(parser: argparse.ArgumentParser, args: argparse.Namespace) -> None:
    from twistls.commands._probe import DEFAULT_PORTS, split_host_port

    try:
        host, port = split_host_port(args.target)
    except ValueError as exc:
        parser.error(str(exc))
    if port is None:
        port = DEFAULT_PORTS.get(args.starttls or "tls")
        if port is None:
            parser.error(f"--starttls {args.starttls} has no usual port: give HOST:PORT")
    args.host, args.port = host, port


def main(argv: Sequence[str] | None = None) -> int:
    """Run the command line; returns the exit status."""
    parser = _parser()
    args = parser.parse_args(argv)
    if args.command is None:
        parser.print_help()
        return 2
    if args.command == "probe":
        _split_target(parser, args)
        if args.private_key and not args.certificate:
            parser.error("--private-key needs --certificate")
        if args.passphrase_file and not args.certificate:
            parser.error("--passphrase-file needs --certificate (and the encrypted key it opens)")
        from twistls.commands._probe import run

        return run(args)
    if args.command == "verify":
        from twistls._verify import run as run_verify

        return run_verify(args)
    if args.command == "mkcert":
        return _mkcert(args)
    if args.command == "mkticketkey":
        return _mkticketkey(args)
    if args.command == "demo":
        from twistls.commands._demo import run_demo

        return run_demo(args.message, in_process=args.in_process)
    parser.error(f"unknown command {args.command!r}")
    return 2


def _mkticketkey(args: argparse.Namespace) -> int:
    import os

    from twistls._ticketkeys import new_key, rotate_key_file, write_key_file
    from twistls.errors import ConfigurationError

    try:
        if args.rotate:
            if not os.path.exists(args.file):
                print(f"twistls mkticketkey: {args.file}: no such file to rotate (leave out --rotate to make one)", file=sys.stderr)
                return 1
            keys = rotate_key_file(args.file, keep=args.keep)
        elif os.path.exists(args.file) and not args.force:
            print(f"twistls mkticketkey: {args.file} exists: use --rotate (or --force to replace it)", file=sys.stderr)
            return 1
        else:
            keys = [new_key()]
            write_key_file(args.file, keys)
    except (ConfigurationError, OSError) as exc:
        print(f"twistls mkticketkey: {exc}", file=sys.stderr)
        return 1
    print(f"{args.file}: {len(keys)} key(s), new first key {keys[0].name.hex()}")
    return 0


def _mkcert(args: argparse.Namespace) -> int:
    import tempfile

    from twistls.commands._mkcert import DEFAULT_NAMES, make_certificates

    directory = args.dir or tempfile.mkdtemp(prefix="twistls-mkcert-")
    try:
        result = make_certificates(
            directory,
            args.names or DEFAULT_NAMES,
            client_names=args.client,
            days=args.days,
            overwrite=args.force,
        )
    except (ValueError, OSError) as exc:
        print(f"twistls mkcert: {exc}", file=sys.stderr)
        return 2
    rows = [
        ("CA certificate (trust this)", result.cafile),
        ("server certificate chain", result.certificate),
        ("server private key", result.private_key),
    ]
    if result.client_certificate:
        rows += [
            ("client certificate chain", result.client_certificate),
            ("client private key", result.client_private_key or ""),
        ]
    width = max(len(k) for k, _ in rows)
    for key, value in rows:
        print(f"{key.ljust(width)} : {value}")
    names = ", ".join(args.names or DEFAULT_NAMES)
    print(f"{'names'.ljust(width)} : {names} (valid {args.days} days; the CA key was not kept)")
    return 0


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
