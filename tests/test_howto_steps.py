"""The HOWTOs can be followed top to bottom in one working directory (issue 15
item 8): no two pages make the same ``mkcert`` directory or start servers on
the same port, every ``twistd`` a page starts alongside another names its own
``--pidfile``, and the page that introduces ``mkcert`` says how long its
certificates last.  Pure text checks of ``doc/howto/*.rst``."""

from __future__ import annotations

import collections
import glob
import os
import re

from twisted.trial.unittest import SynchronousTestCase

HOWTO = os.path.join(os.path.dirname(os.path.dirname(os.path.abspath(__file__))), "doc", "howto")

#: A reference of example strings, not steps to follow.
_REFERENCE = {"endpoint-strings.rst"}
#: Production illustrations (system paths, private addresses, port 443) are not steps either.
_ILLUSTRATION = re.compile(r"/etc/|/srv/|\b10\.0\.0\.|\b443\b")
_SERVER_PORT = re.compile(r"(?:--port |--starttls-port |--listen '?(?:twistls|tcp|ssl):)(\d+)")


def _commands(text: str) -> list[str]:
    """The shell commands of the console blocks (``$ ...`` with ``\\`` and ``>`` continuations joined)."""
    commands: list[str] = []
    for line in re.sub(r"\\\n\s*", " ", text).splitlines():
        stripped = line.strip()
        if stripped.startswith("$ "):
            commands.append(stripped[2:])
        elif stripped.startswith("> ") and commands:
            commands[-1] += " " + stripped[2:]
    return commands


def _pages() -> dict[str, list[str]]:
    return {
        os.path.basename(path): _commands(open(path, encoding="utf-8").read())
        for path in sorted(glob.glob(os.path.join(HOWTO, "*.rst")))
    }


class HowtoStepsTests(SynchronousTestCase):
    """Following every HOWTO in one directory collides nowhere."""

    def test_no_two_pages_share_a_mkcert_directory_or_a_server_port(self) -> None:
        """Each mkcert --dir and each port a twistd step listens on belongs to one page."""
        owners: dict[str, set[str]] = collections.defaultdict(set)
        for page, commands in _pages().items():
            if page in _REFERENCE:
                continue
            for command in commands:
                for directory in re.findall(r"\bmkcert\b.*?--dir (\S+)", command):
                    owners[f"directory {directory}"].add(page)
                if re.search(r"\btwistd\b", command) and not _ILLUSTRATION.search(command):
                    for port in _SERVER_PORT.findall(command):
                        owners[f"port {port}"].add(page)
        self.assertIn("directory serve-ca", owners)
        self.assertIn("port 8460", owners)
        shared = {what: pages for what, pages in owners.items() if len(pages) > 1}
        self.assertEqual(shared, {})

    def test_servers_started_side_by_side_have_their_own_pidfile(self) -> None:
        """A page that starts more than one twistd gives each a distinct --pidfile (twistd refuses a second twistd.pid)."""
        for page, commands in _pages().items():
            servers = [c for c in commands if re.match(r"twistd\b", c) and not _ILLUSTRATION.search(c)]
            if page in _REFERENCE or len(servers) < 2:
                continue
            pidfiles = [re.search(r"--pidfile[= ](\S+)", c) for c in servers]
            self.assertTrue(all(pidfiles), (page, servers))
            names = [m.group(1) for m in pidfiles if m]
            self.assertEqual(len(names), len(set(names)), (page, names))

    def test_mkcert_pages_state_the_validity(self) -> None:
        """Pages that make certificates with mkcert say they last 30 days."""
        for page in ("serving-twistd.rst", "mutual-tls.rst"):
            with open(os.path.join(HOWTO, page), encoding="utf-8") as f:
                self.assertIn("30 days", " ".join(f.read().split()), page)
