"""Smoke test of bench/scale_out.py (issue 16): it runs at tiny sizes and prints its table,
its ratios and its verdicts.  Nothing here is timed: the figures are the benchmark's business."""

from __future__ import annotations

import os
import re
import subprocess
import sys
import unittest

from twistls._workers import reuse_port_supported

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
SCALE_OUT = os.path.join(ROOT, "bench", "scale_out.py")


class ScaleOutBenchmarkTests(unittest.TestCase):
    @unittest.skipUnless(reuse_port_supported(), "--workers needs Linux")
    def test_runs_and_prints_its_table(self) -> None:
        """A quick run with 1 client for 0.3 s per figure prints every row, the ratios and the verdict lines."""
        done = subprocess.run(
            [sys.executable, SCALE_OUT, "--quick", "--seconds", "0.3", "--clients", "1", "--attempts", "10", "--no-control", "--no-json"],
            capture_output=True,
            text=True,
            timeout=120,
            cwd=ROOT,
        )
        out = done.stdout
        self.assertEqual(done.returncode, 0, done.stderr[-3000:])
        self.assertIn("twistls scale-out benchmark", out)
        self.assertRegex(out, r"(?m)^config\s+hs/s full\s+hs/s resumed\s+srv ms/hs full")
        for row in ("1 process", "2 workers", "2 workers, no key file"):
            self.assertRegex(out, rf"(?m)^{re.escape(row)}\s+(\d+|-)\s", row)
        self.assertRegex(out, r"(?m)^2 workers / 1 process\s+\d+\.\d\dx\s+\d+\.\d\dx\s+\d+\.\d\dx\s+\d+\.\d\dx$")
        # Resumption is not a timing: with the shared key file every attempt resumes.
        self.assertRegex(out, r"(?m)^PASS  resumption across 2 workers with a shared --ticket-key-file: 100% of 10 attempts")
        self.assertRegex(out, r"(?m)^info  resumption across 2 workers without it")
        self.assertIn("load generator competes with the workers for the same cores", out)
        self.assertNotIn("Traceback", done.stderr)


if __name__ == "__main__":
    unittest.main()
