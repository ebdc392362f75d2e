"""Reason strings differ between OpenSSL releases; the classification must not."""

from __future__ import annotations

from twisted.trial.unittest import SynchronousTestCase

from twistls._reasons import classify as _classify
from twistls.errors import PeerAlertError


class AlertReasonSpellingTests(SynchronousTestCase):
    def test_alert_spellings_of_openssl_30_and_35(self) -> None:
        """OpenSSL 3.0 says 'sslv3 alert X', 3.2+ says 'ssl/tls alert X': both are PeerAlertError(alert=X)."""
        for text in ("sslv3 alert handshake failure", "ssl/tls alert handshake failure"):
            error = _classify(text, [text])
            self.assertIsInstance(error, PeerAlertError, text)
            self.assertEqual(error.alert, "handshake failure")
        for text, alert in (("ssl/tls alert bad certificate", "bad certificate"),
                            ("ssl/tls alert certificate expired", "certificate expired"),
                            ("ssl/tls alert bad record mac", "bad record mac"),
                            ("tlsv1 alert unknown ca", "unknown ca"),
                            ("tlsv13 alert certificate required", "certificate required")):
            error = _classify(text, [text])
            self.assertIsInstance(error, PeerAlertError, text)
            self.assertEqual(error.alert, alert)
