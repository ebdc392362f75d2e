"""The package type-checks under ``mypy --strict`` (configured in setup.cfg)."""

from __future__ import annotations

import importlib.util
import os
import subprocess
import sys

from twisted.trial.unittest import SkipTest, SynchronousTestCase

_ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
_TIMEOUT = 600


class TypingTests(SynchronousTestCase):
    def test_mypy_strict_passes(self) -> None:
        """``python -m mypy --strict twistls`` run from the repository root exits 0."""
        if importlib.util.find_spec("mypy") is None:
            raise SkipTest("mypy is not installed (pip install -e .[test]); the strict type check did not run")
        try:
            result = subprocess.run(
                [sys.executable, "-m", "mypy", "--strict", "twistls"],
                cwd=_ROOT,
                capture_output=True,
                text=True,
                timeout=_TIMEOUT,
            )
        except subprocess.TimeoutExpired as exc:
            output = "".join(
                part.decode("utf-8", "replace") if isinstance(part, bytes) else part
                for part in (exc.stdout, exc.stderr)
                if part
            )
            self.fail(f"mypy --strict twistls took more than {_TIMEOUT} s:\n{output}")
        self.assertEqual(
            result.returncode,
            0,
            f"mypy --strict twistls failed (exit {result.returncode}):\n{result.stdout}{result.stderr}",
        )
