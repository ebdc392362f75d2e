"""The report of ``twistls probe``: a JSON-ready dict (what ``--json``
prints) filled in from the probe's connections, and its aligned text form
(:func:`format_report`)."""

from __future__ import annotations

from typing import Any

__all__ = ["format_report"]


def new_report(
    host: str,
    port: int,
    *,
    starttls: str | None,
    expected: str,
    cafile: str | None,
    capath: str | None,
    certificate: str | None,
) -> dict[str, Any]:
    """The report before any connection: what was asked, nothing learnt."""
    from twistls.checker import parse_ip

    return {
        "target": f"[{host}]:{port}" if ":" in host else f"{host}:{port}",
        "address": None,
        "starttls": starttls,
        "expected_name": expected,
        "sni": None if parse_ip(expected) is not None else expected,
        "trust": f"CA file {cafile}" if cafile else f"CA directory {capath}" if capath else "system trust store",
        "peer_certificate": False,
        "names": [],
        "names_match": None,
        "chain": [],
        "protocol_version": None,
        "cipher": None,
        "cipher_bits": None,
        "group": None,
        "compression": None,
        "alpn": None,
        "session_reused": None,
        "session_reused_on_reconnect": None,
        "details_from": None,
        "verified": False,
        "verdict": "error",
        "reason": None,
        "error_type": None,
        "preamble": [],
        "client_certificate": certificate,
        "client_certificate_requested": None,
        "client_ca_names": [],
        "ended_after_handshake": None,
        "plaintext": None,
        "plaintext_protocol": None,
        "suggest_starttls": None,
        "server_accepts": None,
    }


def add_plaintext(report: dict[str, Any], plain: tuple[str, str, str | None]) -> None:
    """Record that the server answered in a cleartext protocol (as
    :func:`~twistls.commands._starttls._plaintext` names it), with the
    ``--starttls`` to try."""
    report["verdict"] = "plaintext"
    report["plaintext"], report["plaintext_protocol"], report["suggest_starttls"] = plain
    line, name, suggestion = plain
    report["error_type"] = "PlaintextPort"
    advice = (
        f"try --starttls {suggestion}"
        if suggestion
        else "this port does not speak TLS"
        + ("" if name != "an unknown plaintext protocol" else " (or needs --starttls PROTO: smtp, imap, pop3, ftp, plain-line)")
    )
    report["reason"] = f"the server answered in plaintext ({name}): '{line}'; {advice}"


def add_details(report: dict[str, Any], details: Any, expected: str) -> None:
    """Record what a handshake showed (a ``ConnectionInfo``): the chain,
    whether its names match ``expected``, and what was negotiated."""
    from cryptography import x509

    from twistls.checker import Checker, certificate_names
    from twistls.errors import TLSError

    chain = details.peer_chain_der
    report["peer_certificate"] = bool(chain)
    report["chain"] = _chain_rows(chain)
    if chain:
        leaf = x509.load_der_x509_certificate(chain[0])
        report["names"] = certificate_names(leaf)
        try:
            Checker(hostname=expected).check_hostname(leaf)
            report["names_match"] = True
        except TLSError:
            report["names_match"] = False
    report["protocol_version"] = details.version
    report["cipher"] = details.cipher
    report["cipher_bits"] = details.cipher_bits
    report["group"] = getattr(details, "group", None)
    report["compression"] = getattr(details, "compression", None)
    report["alpn"] = details.alpn_protocol


def _chain_rows(chain_der: tuple[bytes, ...] | list[bytes]) -> list[dict[str, Any]]:
    """Each certificate as :func:`~twistls._info.describe_certificate` has it
    (subject, issuer, ``sha256`` fingerprint, ``spki_sha256`` and ``pin``,
    validity, ``san``), with ``not_before``/``not_after`` kept as aliases."""
    from twistls._info import describe_certificate

    rows = []
    for der in chain_der:
        row: dict[str, Any] = describe_certificate(der)
        row["not_before"] = row["not_valid_before"]
        row["not_after"] = row["not_valid_after"]
        rows.append(row)
    return rows


# --- the text form ---------------------------------------------------------------

Rows = list[tuple[str, str]]


def _yes_no(value: Any) -> str:
    if value is None:
        return "-"
    return "yes" if value else "no"


def format_report(report: dict[str, Any]) -> str:
    """The aligned text form of a :func:`~twistls.commands._probe.probe` report.

    Every value is escaped with :func:`~twistls._info.printable`: the subject,
    issuer, names, ALPN and the reason (which may quote the server's
    preamble lines or certificate fields) come from an unverified peer, and
    a control character in them could forge or hide rows (the report keeps
    them raw, for ``--json``)."""
    from twistls._info import printable

    rows = [
        *_target_rows(report),
        *_detail_rows(report),
        *_client_certificate_rows(report),
        *_accepts_rows(report),
        *_verdict_rows(report),
    ]
    width = max(len(k) for k, _ in rows)
    return "\n".join(f"{k.ljust(width)} : {printable(v)}" for k, v in rows)


def _target_rows(report: dict[str, Any]) -> Rows:
    """Where the probe went and what it expected there."""
    rows: Rows = [
        ("target", report["target"]),
        ("address", report["address"] or "(not connected)"),
    ]
    if report["starttls"]:
        rows.append(("STARTTLS", report["starttls"]))
    rows += [
        ("expected name", report["expected_name"]),
        ("SNI sent", report["sni"] or "(none: an IP address)"),
        ("trust anchors", report["trust"]),
    ]
    if report["details_from"] and report["details_from"] != "the verifying connection":
        rows.append(("details below from", report["details_from"]))
    return rows


def _detail_rows(report: dict[str, Any]) -> Rows:
    """The certificates and the negotiated parameters, when a handshake showed them."""
    if not report["details_from"]:
        return []
    rows: Rows = [
        ("peer certificate", _yes_no(report["peer_certificate"])),
        ("certificate names", ", ".join(report["names"]) or "(none)"),
        ("names match host", _yes_no(report["names_match"])),
    ]
    for i, cert in enumerate(report["chain"]):
        rows.append((f"chain [{i}]", f"{cert['subject']} (expires {cert['not_after']})"))
        rows.append((f"chain [{i}] SHA-256", cert["sha256"]))
        rows.append((f"chain [{i}] SPKI pin", cert["pin"]))
    bits = f" ({report['cipher_bits']} bits)" if report["cipher_bits"] else ""
    rows += [
        ("protocol version", report["protocol_version"] or "-"),
        ("cipher", f"{report['cipher'] or '-'}{bits}"),
        ("key exchange group", report["group"] or "-"),
        ("compression", report["compression"] or "none"),
        ("ALPN", report["alpn"] or "none"),
    ]
    return rows


def _client_certificate_rows(report: dict[str, Any]) -> Rows:
    """Whether the server asked for a client certificate, and how the connection ended."""
    rows: Rows = []
    if report["client_certificate_requested"]:
        cas = "; ".join(report["client_ca_names"]) or "none named"
        sent = f"sent {report['client_certificate']}" if report["client_certificate"] else "none sent"
        rows.append(("client certificate", f"client certificate requested (acceptable CAs: {cas}); {sent}"))
    elif report["details_from"] or report["verified"]:
        rows.append(("client certificate", "not requested"))
    if report["ended_after_handshake"]:
        rows.append(("after the handshake", f"the server ended the connection: {report['ended_after_handshake']}"))
    return rows


def _accepts_rows(report: dict[str, Any]) -> Rows:
    """What the server accepted, after a handshake failure."""
    accepts = report.get("server_accepts")
    if not accepts:
        return []
    rows: Rows = []
    for what in ("versions", "groups", "suites"):
        tried = accepts[what]
        if not tried:
            continue
        yes = [name for name, ok in tried.items() if ok]
        no = [name for name, ok in tried.items() if ok is False]
        text = ", ".join(yes) or "none of those tried"
        if no:
            text += f" (refused: {', '.join(no)})"
        rows.append((f"server accepts {what}", text))
    outside = accepts["accepted_outside_defaults"]
    if outside:
        rows.append(("not offered by default", ", ".join(outside)))
    elif not any(accepts["versions"].values()):
        rows.append(("server accepts", "no TLS 1.2 or 1.3 handshake (TLS 1.0/1.1 only? twistls does not negotiate them)"))
    return rows


def _verdict_rows(report: dict[str, Any]) -> Rows:
    """The verdict, with session reuse when verified and the reason when not."""
    if report["verified"]:
        again = report["session_reused_on_reconnect"]
        reuse = _yes_no(report["session_reused"])
        if again is not None:
            reuse += f" (on reconnect: {_yes_no(again)})"
        return [("session reused", reuse), ("verdict", "VERIFIED: chain trusted and name accepted by the Checker")]
    if report["verdict"] == "plaintext":
        return [("verdict", "PLAINTEXT: this port does not start with TLS"), ("reason", report["reason"])]
    return [("verdict", report["verdict"].upper()), ("reason", f"{report['error_type']}: {report['reason']}")]
