"""No leaks: full connections through one server process return its fds to
the start, and RSS stops growing after warm-up (bench/leaks.py, smaller count)."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import unittest

LEAKS = os.path.join(os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__)))), "bench", "leaks.py")


class LeakTests(unittest.TestCase):
    """1500 mutual-TLS connections (handshake, 4 KiB echo, close_notify)."""

    def test_fds_return_and_rss_flat_after_warmup(self):
        """After 1500 connections the server's open fds equal the start, and
        RSS grew by < 8 MiB over the last 1000 (SSL, BIO, X509 all freed)."""
        done = subprocess.run(
            [sys.executable, LEAKS, "--count", "1500", "--warmup", "500", "--mtls", "--json"],
            capture_output=True,
            timeout=240,
        )
        result = json.loads(done.stdout.decode().strip().splitlines()[-1])
        self.assertEqual(result["failed_connections"], 0, result)
        self.assertEqual(result["fds_end"], result["fds_start"], result)
        self.assertLess(result["rss_growth_after_warmup"], 8 << 20, result)
        self.assertTrue(result["ok"], result)
        self.assertEqual(done.returncode, 0, done.stderr.decode()[-2000:])
