"""Run the conformance cases through ``twistls verify``'s engine, per PKI profile.

:func:`verdict` writes a case's files to a temporary directory and calls
:func:`twistls._verify.verify_certificate`: OpenSSL's ``X509_verify_cert``
set up as a twistls client sets it up, then the client's
:class:`~twistls.checker.Checker` (with the strict profile's pyca check for
``pki_profile="strict"``), at the case's time.  That is the verdict a live
client would give, minus the handshake.
"""

from __future__ import annotations

import os
import tempfile
import warnings
from dataclasses import dataclass

from tests.conformance.cases import Case, cases
from twistls._verify import verify_certificate
from twistls.errors import ConfigurationError

__all__ = ["Verdict", "verdict", "table", "KNOWN"]

#: Cases where the strict profile knowingly differs from the expected verdict,
#: with the reason (see ``doc/howto/security.rst``).
KNOWN: dict[str, str] = {
    "eku-critical": "tolerated: RFC 5280 allows a critical EKU, and trustme issues one",
    "san-critical-non-empty-subject": "tolerated: RFC 5280 only says SHOULD NOT, and trustme issues one",
    "not-after-fractional-seconds": (
        "known false reject: RFC 5280 forbids fractional seconds and cryptography cannot parse the "
        "certificate, so neither profile can check it"
    ),
}


@dataclass(frozen=True)
class Verdict:
    """What one profile said about one case."""

    case: Case
    profile: str
    accepted: bool
    problems: tuple[str, ...]

    @property
    def outcome(self) -> str:
        """``"pass"``, ``"false accept"`` or ``"false reject"``."""
        if self.accepted == (self.case.expected == "accept"):
            return "pass"
        return "false accept" if self.accepted else "false reject"


def verdict(case: Case, profile: str) -> Verdict:
    """Verify ``case`` as a twistls client with ``pki_profile=profile`` would.

    Args:
        case: the case.
        profile: ``"strict"`` or ``"rfc5280"``.

    Returns:
        The :class:`Verdict` (a certificate that cannot even be loaded is
        a rejection).
    """
    with tempfile.TemporaryDirectory(prefix="twistls-conformance-") as d:
        chain = os.path.join(d, "chain.pem")
        anchors = os.path.join(d, "anchors.pem")
        with open(chain, "wb") as f:
            f.write(case.pem_chain())
        with open(anchors, "wb") as f:
            f.write(case.pem_anchors())
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")  # cryptography's warning for a zero serial: a case of its own
            try:
                result = verify_certificate(chain, hostname=case.host, cafile=anchors, at=case.at, pki_profile=profile)
            except (ConfigurationError, ValueError) as exc:
                return Verdict(case, profile, False, (f"{type(exc).__name__}: {exc}",))
    return Verdict(case, profile, result.accepted, tuple(f"{type(p).__name__}: {p}" for p in result.problems))


def table(profiles: tuple[str, ...] = ("rfc5280", "strict")) -> dict[str, list[Verdict]]:
    """Every case through every profile.

    Returns:
        ``{profile: [Verdict, ...]}`` in case order.
    """
    return {profile: [verdict(c, profile) for c in cases()] for profile in profiles}
