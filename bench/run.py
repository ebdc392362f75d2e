"""twistls against its peers, on loopback, in one run: ``python bench/run.py [--quick]``.

See bench/README.md for what is measured and how.  Servers and clients run in
separate processes pinned to different cores; each figure is the median of
``--runs`` runs, the stacks interleaved within each run so that ratios taken
in the same run stay comparable on a busy machine.  Results go to
``bench/results/<time>.json``.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import re
import shutil
import socket
import statistics
import subprocess
import sys
import tempfile
import time

HERE = os.path.dirname(os.path.abspath(__file__))
ROOT = os.path.dirname(HERE)
sys.path.insert(0, HERE)

import _certs  # noqa: E402

PY = sys.executable
WORKER = os.path.join(HERE, "_worker.py")
#: Twisted's own TLS again, but with pyOpenSSL on the *system* libssl (the one
#: M2Crypto, so twistls, links): the like-for-like peer.  It runs under this
#: interpreter, from a virtual environment that sees Debian's python3-openssl
#: and python3-cryptography (``bash run.sh bench`` makes it: .venv-syslibssl).
SYSLIBSSL = "twisted-syslibssl"
SYSLIBSSL_PY = os.environ.get("TWISTLS_BENCH_SYSLIBSSL_PYTHON") or os.path.join(ROOT, ".venv-syslibssl", "bin", "python")


def python_for(stack: str) -> str:
    return SYSLIBSSL_PY if stack == SYSLIBSSL else PY


def worker_stack(stack: str) -> str:
    """The worker's name for a stack (the syslibssl peer is the twisted code path)."""
    return "twisted" if stack == SYSLIBSSL else stack


def syslibssl_version() -> str | None:
    """The libssl the like-for-like peer's pyOpenSSL runs on, or None if it cannot run here."""
    if not os.path.exists(SYSLIBSSL_PY):
        return None
    code = (
        "from OpenSSL import SSL; import twisted.protocols.tls\n"
        "v = getattr(SSL, 'OpenSSL_version', None)\n"
        "print((v(SSL.OPENSSL_VERSION) if v else SSL.SSLeay_version(SSL.SSLEAY_VERSION)).decode())"
    )
    try:
        p = subprocess.run([SYSLIBSSL_PY, "-c", code], capture_output=True, text=True, timeout=60)
    except (OSError, subprocess.SubprocessError):
        return None
    return p.stdout.strip() or None if p.returncode == 0 else None
SUITE = "TLS_AES_128_GCM_SHA256"
GROUPS = "X25519:P-256:P-384"  # the same key exchange (X25519) on every stack
CIPHER = "aes-128-gcm"
TICK = os.sysconf("SC_CLK_TCK")
SERVER_CPU, CLIENT_CPU = 0, 1

OPENSSL_CNF = f"""openssl_conf = openssl_init
[openssl_init]
ssl_conf = ssl_sect
[ssl_sect]
system_default = system_default_sect
[system_default_sect]
Ciphersuites = {SUITE}
Groups = {GROUPS}
"""


def log(msg: str) -> None:
    print(msg, file=sys.stderr, flush=True)


# ---------------------------------------------------------------------------------------------
# processes
# ---------------------------------------------------------------------------------------------


def proc_cpu(pid: int) -> float:
    with open(f"/proc/{pid}/stat") as f:
        fields = f.read().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / TICK  # utime + stime


def proc_rss_kib(pid: int) -> int:
    with open(f"/proc/{pid}/status") as f:
        for line in f:
            if line.startswith("VmRSS:"):
                return int(line.split()[1])
    return 0


class Env:
    def __init__(self, certs: str, cnf: str) -> None:
        self.certs = certs
        self.cnf = cnf
        self.procs: list[subprocess.Popen] = []
        self.profile = os.environ.get("TWISTLS_BENCH_PROFILE")

    def env_for(self, stack: str) -> dict:
        env = dict(os.environ)
        env["PYTHONPATH"] = ROOT + os.pathsep + env.get("PYTHONPATH", "")
        if stack in ("asyncio", "uvloop"):
            env["OPENSSL_CONF"] = self.cnf  # Python's ssl has no TLS 1.3 suite setter
        return env

    def spawn(self, argv: list[str], stack: str, **kw) -> subprocess.Popen:
        p = subprocess.Popen(argv, stdout=subprocess.PIPE, stdin=subprocess.PIPE, text=True, env=self.env_for(stack), **kw)
        self.procs.append(p)
        return p

    def kill(self, p: subprocess.Popen) -> None:
        if p.poll() is None and self.profile:
            p.terminate()  # lets a profiled worker write its stats
            try:
                p.wait(timeout=10)
            except subprocess.TimeoutExpired:
                pass
        if p.poll() is None:
            p.kill()
        try:
            p.wait(timeout=10)
        except subprocess.TimeoutExpired:
            pass
        for f in (p.stdout, p.stdin):
            try:
                if f:
                    f.close()
            except OSError:
                pass
        if p in self.procs:
            self.procs.remove(p)

    def kill_all(self) -> None:
        for p in list(self.procs):
            self.kill(p)

    def server(self, stack: str, test: str, key: str, extra: list[str]) -> tuple[subprocess.Popen, int]:
        if stack == "s_server":
            port = free_port()
            ca, cert, keyfile = _certs.paths(self.certs, key)
            argv = ["openssl", "s_server", "-accept", f"127.0.0.1:{port}", "-cert", cert, "-key", keyfile,
                    "-ciphersuites", SUITE, "-groups", GROUPS, "-rev", "-quiet"]
            p = subprocess.Popen(argv, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, stdin=subprocess.DEVNULL)
            self.procs.append(p)
            os.sched_setaffinity(p.pid, {SERVER_CPU})
            wait_port(port, 10)
            return p, port
        argv = [python_for(stack), WORKER, "server", worker_stack(stack), test, "--certs", self.certs, "--key", key,
                "--cpu", str(SERVER_CPU), *extra]
        p = self.spawn(argv, stack)
        line = read_line(p, 30)
        if not line:
            self.kill(p)
            raise RuntimeError(f"{stack} server did not start")
        return p, json.loads(line)["port"]

    def client(self, stack: str, test: str, key: str, port: int, extra: list[str]) -> subprocess.Popen:
        argv = [python_for(stack), WORKER, "client", worker_stack(stack), test, "--certs", self.certs, "--key", key,
                "--port", str(port), "--cpu", str(CLIENT_CPU), *extra]
        return self.spawn(argv, stack)


def free_port() -> int:
    s = socket.socket()
    s.bind(("127.0.0.1", 0))
    port = s.getsockname()[1]
    s.close()
    return port


def wait_port(port: int, timeout: float) -> None:
    end = time.monotonic() + timeout
    while time.monotonic() < end:
        try:
            socket.create_connection(("127.0.0.1", port), timeout=1).close()
            return
        except OSError:
            time.sleep(0.05)
    raise RuntimeError(f"nothing listens on {port}")


def read_line(p: subprocess.Popen, timeout: float) -> str | None:
    import select

    end = time.monotonic() + timeout
    while time.monotonic() < end:
        r, _, _ = select.select([p.stdout], [], [], max(0.0, min(1.0, end - time.monotonic())))
        if r:
            line = p.stdout.readline()
            return line.strip() or None
        if p.poll() is not None:
            return None
    return None


def run_pair(env: Env, stack: str, test: str, key: str, server_extra: list[str], client_extra: list[str],
             timeout: float) -> dict:
    """One server + one client; returns the client's result plus the server's CPU/RSS deltas."""
    server_stack = "s_server" if stack == "s_server" else stack
    client_stack = "twistls" if stack == "s_server" else stack
    server, port = env.server(server_stack, test, key, server_extra)
    try:
        time.sleep(0.1)
        cpu0, rss0 = proc_cpu(server.pid), proc_rss_kib(server.pid)
        client = env.client(client_stack, test, key, port, client_extra + ["--timeout", str(timeout)])
        try:
            line = read_line(client, timeout + 20)
            if line is None:
                return {"error": "client printed nothing (crashed or timed out)"}
            result = json.loads(line)
            if "holding" in result:  # memory test: sample while the connections are idle
                time.sleep(0.5)
                rss1 = proc_rss_kib(server.pid)
                held = result["holding"]
                client.stdin.write("go\n")
                client.stdin.flush()
                line = read_line(client, 30)
                result = json.loads(line) if line else {}
                result["holding"] = held
                result["server_rss_delta_kib"] = rss1 - rss0
                result["kib_per_conn"] = (rss1 - rss0) / held if held else None
            result["server_cpu"] = proc_cpu(server.pid) - cpu0
            return result
        finally:
            env.kill(client)
    finally:
        env.kill(server)


# ---------------------------------------------------------------------------------------------
# the workloads
# ---------------------------------------------------------------------------------------------


def median(values: list[float | None]) -> float | None:
    vals = [v for v in values if v is not None]
    return statistics.median(vals) if vals else None


def bench_bulk(env: Env, stacks: list[str], runs: int, size: int, raw: dict) -> dict:
    out: dict = {}
    for r in range(runs):
        for stack in stacks:
            res = run_pair(env, stack, "bulk", "rsa", ["--size", str(size)], ["--size", str(size)], 300)
            raw.setdefault("bulk", []).append({"run": r, **res})
            if "error" in res:
                log(f"  bulk {stack}: ERROR {res['error']}")
                continue
            gb = res["bytes"] / 1e9
            row = out.setdefault(stack, {"mbps": [], "server_s_per_gb": [], "client_s_per_gb": [], "cipher": res.get("cipher")})
            row["mbps"].append(res["bytes"] / 1e6 / res["seconds"])
            row["server_s_per_gb"].append(res["server_cpu"] / gb)
            row["client_s_per_gb"].append(res["client_cpu"] / gb)
            log(f"  bulk {stack} run {r}: {row['mbps'][-1]:.0f} MB/s, server {row['server_s_per_gb'][-1]:.2f} s/GB, "
                f"client {row['client_s_per_gb'][-1]:.2f} s/GB ({res.get('cipher')})")
    return {s: {k: (median(v) if isinstance(v, list) else v) for k, v in row.items()} for s, row in out.items()}


def bench_handshakes(env: Env, stacks: list[str], runs: int, duration: float, raw: dict) -> dict:
    out: dict = {}
    for key in ("rsa", "ecdsa"):
        for inflight in (1, 32):
            for r in range(runs):
                for stack in stacks + ["s_server"]:  # s_server serves one connection at a time
                    extra = ["--inflight", str(inflight), "--duration", str(duration), "--count", "100000"]
                    res = run_pair(env, stack, "hs", key, [], extra, duration + 60)
                    raw.setdefault("handshake", []).append({"run": r, "key": key, "inflight": inflight, "stack": stack, **res})
                    if "error" in res or not res.get("handshakes"):
                        log(f"  hs {key} x{inflight} {stack}: ERROR {res.get('error') or res.get('error_samples')}")
                        continue
                    row = out.setdefault(f"{key}/{inflight}", {}).setdefault(stack, {"rate": [], "server_ms": [], "reused": 0})
                    row["rate"].append(res["rate"])
                    row["server_ms"].append(1000 * res["server_cpu"] / res["handshakes"])
                    row["reused"] += res.get("reused", 0)
                    log(f"  hs {key} x{inflight} {stack} run {r}: {res['rate']:.0f}/s, server {row['server_ms'][-1]:.2f} ms/hs"
                        + (f", {res['errors']} errors" if res.get("errors") else ""))
    return {
        mode: {s: {"rate": median(v["rate"]), "server_ms": median(v["server_ms"]), "reused": v["reused"]} for s, v in rows.items()}
        for mode, rows in out.items()
    }


def bench_resumed(env: Env, runs: int, duration: float, raw: dict) -> dict:
    """twistls client session cache on (its default): TLS 1.3 resumption against a twistls server."""
    out: dict = {}
    for inflight in (1, 32):
        for r in range(runs):
            extra = ["--inflight", str(inflight), "--duration", str(duration), "--count", "100000"]
            res = run_pair(env, "twistls", "resume", "rsa", [], extra, duration + 60)
            raw.setdefault("resumed", []).append({"run": r, "inflight": inflight, **res})
            if "error" in res or not res.get("handshakes"):
                log(f"  resumed x{inflight}: ERROR {res.get('error') or res.get('error_samples')}")
                continue
            row = out.setdefault(f"rsa/{inflight}", {"rate": [], "server_ms": [], "reused": [], "handshakes": []})
            row["rate"].append(res["rate"])
            row["server_ms"].append(1000 * res["server_cpu"] / res["handshakes"])
            row["reused"].append(res.get("reused", 0))
            row["handshakes"].append(res["handshakes"])
            log(f"  resumed rsa x{inflight} twistls run {r}: {res['rate']:.0f}/s, server {row['server_ms'][-1]:.2f} ms/hs, "
                f"{res.get('reused', 0)} of {res['handshakes']} resumed")
    return {mode: {"rate": median(v["rate"]), "server_ms": median(v["server_ms"]),
                   "resumed_fraction": sum(v["reused"]) / max(1, sum(v["handshakes"]))} for mode, v in out.items()}


def bench_memory(env: Env, stacks: list[str], runs: int, count: int, raw: dict) -> dict:
    out: dict = {}
    for r in range(runs):
        for stack in stacks:
            extra = ["--inflight", "32", "--count", str(count)]
            res = run_pair(env, stack, "mem", "rsa", [], extra, 120)
            raw.setdefault("memory", []).append({"run": r, "stack": stack, **res})
            if res.get("kib_per_conn") is None:
                log(f"  mem {stack}: ERROR {res.get('error') or res}")
                continue
            out.setdefault(stack, []).append(res["kib_per_conn"])
            log(f"  mem {stack} run {r}: {res['holding']} idle connections, {res['kib_per_conn']:.1f} KiB each")
    return {s: {"kib_per_conn": median(v)} for s, v in out.items()}


def bench_small(env: Env, stacks: list[str], runs: int, raw: dict) -> dict:
    out: dict = {}
    for r in range(runs):
        for stack in stacks:
            res = run_pair(env, stack, "small", "rsa", [], [], 60)
            raw.setdefault("small", []).append({"run": r, "stack": stack, **res})
            if "error" in res or "one_write" not in res:
                log(f"  small {stack}: ERROR {res.get('error')}")
                continue
            sw, ow = res["small_writes"], res["one_write"]
            row = out.setdefault(stack, {"wire_ratio": [], "small_cpu_ms": [], "one_cpu_ms": [], "loop_cpu_ms": []})
            row["wire_ratio"].append(sw["wire_bytes"] / sw["payload"])
            row["small_cpu_ms"].append(1000 * sw["client_cpu"])
            row["one_cpu_ms"].append(1000 * ow["client_cpu"])
            row["loop_cpu_ms"].append(1000 * res.get("loop_only", {}).get("client_cpu", 0.0))
            log(f"  small {stack} run {r}: wire {row['wire_ratio'][-1]:.3f}x payload, 100k writes {row['small_cpu_ms'][-1]:.1f} ms CPU, "
                f"one write {row['one_cpu_ms'][-1]:.1f} ms, bare loop {row['loop_cpu_ms'][-1]:.1f} ms")
    return {s: {k: median(v) for k, v in row.items()} for s, row in out.items()}


def bench_startup(runs: int) -> dict:
    out: dict = {}
    env = dict(os.environ)
    env["PYTHONPATH"] = ROOT
    twistd = os.path.join(os.path.dirname(PY), "twistd")
    cases = {
        "python -m twistls --help": [PY, "-m", "twistls", "--help"],
        "twistd twistls --help": [twistd if os.path.exists(twistd) else "twistd", "twistls", "--help"],
    }
    for name, argv in cases.items():
        times = []
        note = None
        for _ in range(max(3, runs)):
            t = time.perf_counter()
            p = subprocess.run(argv, capture_output=True, text=True, env=env, timeout=60, cwd=ROOT)
            times.append(time.perf_counter() - t)
            if p.returncode != 0:
                note = (p.stderr or p.stdout).strip().splitlines()[-1:] or [f"exit {p.returncode}"]
                note = f"skipped: exit {p.returncode}: {note[0][:120]}"
                break
        out[name] = {"seconds": None if note else median(times), "note": note}
        log(f"  startup {name}: {note or f'{median(times):.3f} s'}")
    return out


def probe_m2_wrapper(env: Env) -> str:
    """Try M2Crypto's own TwistedProtocolWrapper once; returns 'runs' or why it does not."""
    code = r"""
import sys, traceback
sys.path.insert(0, %r)
import _certs
from M2Crypto import SSL
from M2Crypto.SSL import TwistedProtocolWrapper as W
from twisted.internet import reactor, protocol
ca, cert, key = _certs.paths(%r, "rsa")
out = {}
class Echo(protocol.Protocol):
    def dataReceived(self, d): self.transport.write(d)
class Cli(protocol.Protocol):
    def connectionMade(self): self.transport.write(b"ping")
    def dataReceived(self, d): out["ok"] = d; reactor.stop()
class CF(protocol.ClientFactory):
    protocol = Cli
    def clientConnectionFailed(self, c, r): out["err"] = r.getErrorMessage(); reactor.stop()
    def clientConnectionLost(self, c, r):
        out.setdefault("err", "connection lost: " + r.getErrorMessage()); reactor.stop() if reactor.running else None
class SCtx:
    def getContext(self):
        c = SSL.Context("tls"); c.load_cert(cert, key); return c
class CCtx:
    def getContext(self):
        c = SSL.Context("tls"); c.load_verify_locations(ca); c.set_verify(SSL.verify_peer, 9); return c
try:
    sf = protocol.Factory.forProtocol(Echo)
    port = W.listenSSL(0, sf, SCtx(), interface="127.0.0.1")
    W.connectSSL("127.0.0.1", port.getHost().port, CF(), CCtx())
    reactor.callLater(5, lambda: (out.setdefault("err", "no echo within 5 s"), reactor.stop()))
    reactor.run()
except Exception as e:
    out["err"] = "".join(traceback.format_exception_only(type(e), e)).strip()
print("runs" if "ok" in out else "does not run: " + out.get("err", "?"))
""" % (HERE, env.certs)
    try:
        p = subprocess.run([PY, "-c", code], capture_output=True, text=True, timeout=30, env=env.env_for("m2wrapper"))
    except subprocess.TimeoutExpired:
        return "does not run: hung for 30 s"
    lines = [ln for ln in p.stdout.strip().splitlines() if ln]
    # The first exception Twisted logged is the cause; later ones are its consequences.
    errs = [ln.strip() for ln in p.stderr.splitlines() if re.match(r"^[\w.]+(Error|Exception)[\w.]*: ", ln.strip())]
    verdict = lines[-1] if lines else f"does not run: exit {p.returncode}"
    if verdict.startswith("does not run") and errs:
        verdict = f"does not run: {errs[0][:200]}"
    return verdict


def openssl_speed(seconds: int) -> dict:
    out = {}
    for cipher in ("aes-128-gcm", "aes-256-gcm"):
        try:
            p = subprocess.run(["taskset", "-c", str(CLIENT_CPU), "openssl", "speed", "-seconds", str(seconds), "-evp", cipher],
                               capture_output=True, text=True, timeout=120)
            line = [ln for ln in p.stdout.splitlines() if ln.upper().startswith(cipher.upper())][-1]
            kbs = float(line.split()[-1].rstrip("k"))  # 16384-byte blocks, 1000s of bytes per second
            out[cipher] = kbs / 1000.0
        except (IndexError, ValueError, OSError, subprocess.SubprocessError):
            out[cipher] = None
    try:  # label the row with the libssl actually measured (3.0 on Debian 12, 3.5 on Debian 13)
        out["version"] = subprocess.run(["openssl", "version"], capture_output=True, text=True, timeout=10).stdout.split("(")[0].strip()
    except (OSError, subprocess.SubprocessError):
        out["version"] = "?"
    # Twisted's TLS runs on the libssl inside the cryptography wheel, not the system one.
    code = (
        "import os, time, sys\n"
        "from cryptography.hazmat.primitives.ciphers.aead import AESGCM\n"
        "from cryptography.hazmat.backends.openssl import backend\n"
        "a = AESGCM(os.urandom(16)); n = os.urandom(12); d = os.urandom(16384)\n"
        "best = 0\n"
        "for _ in range(3):\n"
        "    t = time.process_time(); k = 0\n"
        "    while time.process_time() - t < %f:\n"
        "        a.encrypt(n, d, None); k += 1\n"
        "    best = max(best, k * 16384 / (time.process_time() - t) / 1e6)\n"
        "print(best, backend.openssl_version_text())\n" % (seconds / 3)
    )
    try:
        p = subprocess.run(["taskset", "-c", str(CLIENT_CPU), PY, "-c", code], capture_output=True, text=True, timeout=60)
        mbps, version = p.stdout.strip().split(" ", 1)
        out["pyca " + CIPHER] = float(mbps)
        out["pyca version"] = version
    except (ValueError, OSError, subprocess.SubprocessError):
        pass
    return out


# ---------------------------------------------------------------------------------------------
# the report
# ---------------------------------------------------------------------------------------------


def fmt(v, spec=".0f") -> str:
    return "-" if v is None else format(v, spec)


def ratio(a, b) -> float | None:
    if a is None or b in (None, 0):
        return None
    return a / b


def report(results: dict, stacks: list[str]) -> tuple[str, list[dict]]:
    lines: list[str] = []
    bulk = results.get("bulk", {})
    hs = results.get("handshakes", {})
    mem = results.get("memory", {})
    small = results.get("small", {})
    speed = results["openssl_speed"].get(CIPHER)
    header = ("stack", "bulk MB/s", "srv CPU s/GB", "cli CPU s/GB", "hs/s rsa x1", "hs/s rsa x32", "srv ms/hs rsa",
              "hs/s ec x1", "hs/s ec x32", "srv ms/hs ec", "KiB/idle conn", "small wire x", "small CPU ms", "1 write ms")

    def row_for(stack: str) -> list[str]:
        b = bulk.get(stack, {})
        h = {m: hs.get(m, {}).get(stack, {}) for m in ("rsa/1", "rsa/32", "ecdsa/1", "ecdsa/32")}
        s = small.get(stack, {})
        return [
            stack,
            fmt(b.get("mbps")), fmt(b.get("server_s_per_gb"), ".2f"), fmt(b.get("client_s_per_gb"), ".2f"),
            fmt(h["rsa/1"].get("rate")), fmt(h["rsa/32"].get("rate")), fmt(h["rsa/32"].get("server_ms"), ".2f"),
            fmt(h["ecdsa/1"].get("rate")), fmt(h["ecdsa/32"].get("rate")), fmt(h["ecdsa/32"].get("server_ms"), ".2f"),
            fmt(mem.get(stack, {}).get("kib_per_conn"), ".1f"),
            fmt(s.get("wire_ratio"), ".3f"), fmt(s.get("small_cpu_ms"), ".1f"), fmt(s.get("one_cpu_ms"), ".1f"),
        ]

    rows = [list(header)] + [row_for(s) for s in stacks]
    if any("s_server" in hs.get(m, {}) for m in ("rsa/1", "rsa/32", "ecdsa/1", "ecdsa/32")):
        ss = {m: hs.get(m, {}).get("s_server", {}) for m in ("rsa/1", "rsa/32", "ecdsa/1", "ecdsa/32")}
        rows.append(["openssl s_server (twistls client)", "-", "-", "-", fmt(ss["rsa/1"].get("rate")), fmt(ss["rsa/32"].get("rate")),
                     fmt(ss["rsa/32"].get("server_ms"), ".2f"), fmt(ss["ecdsa/1"].get("rate")), fmt(ss["ecdsa/32"].get("rate")),
                     fmt(ss["ecdsa/32"].get("server_ms"), ".2f"), "-", "-", "-", "-"])
    if speed:
        rows.append([f"limit: openssl speed {CIPHER} ({results['openssl_speed'].get('version', '?')})", fmt(speed), fmt(1000 / speed, ".2f"), "", "", "", "", "", "", "", "", "", "", ""])
    pyca = results["openssl_speed"].get("pyca " + CIPHER)
    if pyca:
        rows.append([f"  same, pyOpenSSL's libssl ({results['openssl_speed'].get('pyca version', '?')})", fmt(pyca), fmt(1000 / pyca, ".2f"),
                     "", "", "", "", "", "", "", "", "", "", ""])
    # twistls / peer ratios
    ratio_rows = []
    if "twistls" in stacks:
        t = row_for("twistls")
        for peer in stacks:
            if peer == "twistls":
                continue
            p = row_for(peer)
            cells = [f"twistls/{peer}"]
            for i in range(1, len(header)):
                try:
                    a, b = float(t[i]), float(p[i])
                    cells.append(f"{a / b:.2f}x" if b else "-")
                except ValueError:
                    cells.append("-")
            ratio_rows.append(cells)
    rows += ratio_rows
    widths = [max(len(r[i]) for r in rows) for i in range(len(header))]
    for n, r in enumerate(rows):
        lines.append("  ".join(c.rjust(widths[i]) if i else c.ljust(widths[i]) for i, c in enumerate(r)))
        if n == 0:
            lines.append("  ".join("-" * w for w in widths))

    # targets
    targets: list[dict] = []

    def target(name: str, value: float | None, limit: float, cmp: str) -> None:
        ok = None if value is None else (value >= limit if cmp == ">=" else value <= limit)
        targets.append({"target": name, "value": value, "limit": f"{cmp} {limit}", "pass": ok})

    tw, pe = bulk.get("twistls", {}), bulk.get("twisted", {})
    target("bulk throughput vs Twisted TLS", ratio(tw.get("mbps"), pe.get("mbps")), 1.5, ">=")
    target("server CPU/GB vs Twisted TLS", ratio(tw.get("server_s_per_gb"), pe.get("server_s_per_gb")), 0.6, "<=")
    # The two stacks run on different libssl builds (pyOpenSSL's wheel ships a newer one with
    # AVX-512 AES-GCM): the same ratio with each side's own cipher cost taken out.
    pyca = results["openssl_speed"].get("pyca " + CIPHER)
    if speed and pyca and tw.get("server_s_per_gb") is not None and pe.get("server_s_per_gb") is not None:
        glue_t = tw["server_s_per_gb"] - 1000 / speed
        glue_p = pe["server_s_per_gb"] - 1000 / pyca
        results["bulk_glue_s_per_gb"] = {"twistls": glue_t, "twisted": glue_p}
        target("(info) server CPU/GB beyond each libssl's AES-GCM cost vs Twisted TLS", ratio(glue_t, glue_p), 0.6, "<=")
    for key in ("rsa", "ecdsa"):
        m = hs.get(f"{key}/32", {})
        target(f"handshakes/s x32 {key} vs Twisted TLS", ratio(m.get("twistls", {}).get("rate"), m.get("twisted", {}).get("rate")), 1.2, ">=")
        m1 = hs.get(f"{key}/1", {})
        target(f"server CPU/handshake {key} x32 vs openssl s_server",
               ratio(m.get("twistls", {}).get("server_ms"), m.get("s_server", {}).get("server_ms")), 1.1, "<=")
        target(f"server CPU/handshake {key} x1 vs openssl s_server",
               ratio(m1.get("twistls", {}).get("server_ms"), m1.get("s_server", {}).get("server_ms")), 1.1, "<=")
    target("memory per idle connection vs Twisted TLS",
           ratio(mem.get("twistls", {}).get("kib_per_conn"), mem.get("twisted", {}).get("kib_per_conn")), 0.5, "<=")
    # The same targets against Twisted's TLS on the same libssl as twistls (information:
    # the targets are set against the stock peer, whatever libssl its wheel bundles).
    if SYSLIBSSL in stacks:
        like = f"(info, same libssl) {{}} vs {SYSLIBSSL}"
        sy = bulk.get(SYSLIBSSL, {})
        target(like.format("bulk throughput"), ratio(tw.get("mbps"), sy.get("mbps")), 1.5, ">=")
        target(like.format("server CPU/GB"), ratio(tw.get("server_s_per_gb"), sy.get("server_s_per_gb")), 0.6, "<=")
        for key in ("rsa", "ecdsa"):
            m = hs.get(f"{key}/32", {})
            target(like.format(f"handshakes/s x32 {key}"),
                   ratio(m.get("twistls", {}).get("rate"), m.get(SYSLIBSSL, {}).get("rate")), 1.2, ">=")
        target(like.format("memory per idle connection"),
               ratio(mem.get("twistls", {}).get("kib_per_conn"), mem.get(SYSLIBSSL, {}).get("kib_per_conn")), 0.5, "<=")
    st = small.get("twistls", {})
    target("100k x 16 B writes: wire bytes / payload", st.get("wire_ratio"), 1.1, "<=")
    target("100k x 16 B writes: CPU / one 1.6 MB write", ratio(st.get("small_cpu_ms"), st.get("one_cpu_ms")), 3.0, "<=")
    target("100k x 16 B writes, net of the bare loop: CPU / one 1.6 MB write",
           ratio(None if st.get("small_cpu_ms") is None else st["small_cpu_ms"] - (st.get("loop_cpu_ms") or 0), st.get("one_cpu_ms")),
           3.0, "<=")
    for name, v in results.get("startup", {}).items():
        target(f"startup: {name} (s)", v.get("seconds"), 0.5, "<=")
    lines.append("")
    for t in targets:
        verdict = {True: "PASS", False: "MISS", None: "n/a "}[t["pass"]]
        lines.append(f"{verdict}  {t['target']}: {fmt(t['value'], '.2f')} (target {t['limit']})")
    return "\n".join(lines), targets


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--quick", action="store_true", help="small smoke run (1 run, 64 MiB, short handshake runs)")
    parser.add_argument("--runs", type=int, default=None, help="runs per figure (default 3; 1 with --quick)")
    parser.add_argument("--only", default="bulk,hs,mem,small,startup", help="comma-separated subset of bulk,hs,mem,small,startup")
    parser.add_argument("--stacks", default=None,
                        help=f"comma-separated subset of tcp,twistls,twisted,{SYSLIBSSL},asyncio,uvloop")
    parser.add_argument("--profile", metavar="DIR", help="run every worker under cProfile, stats into DIR (slows it down)")
    args = parser.parse_args()
    if args.profile:
        os.makedirs(args.profile, exist_ok=True)
        os.environ["TWISTLS_BENCH_PROFILE"] = os.path.abspath(args.profile)
    quick = args.quick
    runs = args.runs or (1 if quick else 3)
    size = (64 << 20) if quick else (512 << 20)
    duration = 0.5 if quick else 1.2
    mem_count = 300 if quick else 1000
    only = set(args.only.split(","))

    stacks = ["tcp", "twistls", "twisted", "asyncio"]
    try:
        import uvloop  # noqa: F401

        stacks.append("uvloop")
    except ImportError:
        log("uvloop is not installed: skipping it (pip install uvloop)")
    sys_version = syslibssl_version()
    if sys_version:
        stacks.insert(stacks.index("twisted") + 1, SYSLIBSSL)
    else:
        log(f"{SYSLIBSSL}: no interpreter with pyOpenSSL on the system libssl at {SYSLIBSSL_PY} "
            "(bash run.sh bench makes one on Debian): skipping the like-for-like peer")
    if args.stacks:
        stacks = [s for s in args.stacks.split(",") if s]

    t_start = time.monotonic()
    tmp = tempfile.mkdtemp(prefix="twistls-bench-")
    cnf = os.path.join(tmp, "openssl.cnf")
    with open(cnf, "w") as f:
        f.write(OPENSSL_CNF)
    _certs.make(tmp)
    env = Env(tmp, cnf)
    results: dict = {"started": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()), "quick": quick, "runs": runs,
                     "stacks": stacks, "ciphersuite": SUITE, "bulk_bytes_each_way": size, "syslibssl": sys_version,
                     "machine": {"cpus": os.cpu_count(), "loadavg_start": os.getloadavg(), "python": platform.python_version(),
                                 "platform": platform.platform()}}
    raw: dict = {}
    try:
        log(f"openssl speed -evp {CIPHER} / aes-256-gcm ...")
        results["openssl_speed"] = openssl_speed(1 if quick else 2)
        log(f"  {results['openssl_speed']} MB/s (16 KiB blocks, one core)")
        log("M2Crypto TwistedProtocolWrapper ...")
        results["m2_wrapper"] = probe_m2_wrapper(env)
        log(f"  {results['m2_wrapper']}")
        sections = [
            ("bulk", "bulk", f"bulk: {size >> 20} MiB each way, one connection, {SUITE}",
             lambda: bench_bulk(env, stacks, runs, size, raw)),
            ("hs", "handshakes", f"full handshakes: {duration} s per run, RSA-2048 and ECDSA P-256, 1 and 32 in flight",
             lambda: bench_handshakes(env, stacks, runs, duration, raw)),
            ("hs", "resumed_handshakes", "resumed handshakes (twistls client session cache)",
             lambda: bench_resumed(env, runs, duration, raw) if "twistls" in stacks else {}),
            ("mem", "memory", f"memory: {mem_count} idle connections", lambda: bench_memory(env, stacks, runs, mem_count, raw)),
            ("small", "small", "small writes: 100,000 x 16 B in one reactor turn vs one 1.6 MB write",
             lambda: bench_small(env, stacks, runs, raw)),
            ("startup", "startup", "start-up", lambda: bench_startup(runs)),
        ]
        for name, key, title, func in sections:
            if name not in only:
                continue
            log(title)
            try:
                results[key] = func()
            except Exception as exc:  # keep what the other sections measured
                log(f"  {key} FAILED: {type(exc).__name__}: {exc}")
                results.setdefault("errors", {})[key] = f"{type(exc).__name__}: {exc}"
                env.kill_all()
    finally:
        env.kill_all()
        shutil.rmtree(tmp, ignore_errors=True)
    results["machine"]["loadavg_end"] = os.getloadavg()
    results["seconds"] = time.monotonic() - t_start
    table, targets = report(results, stacks)
    results["targets"] = targets
    results["raw"] = raw
    os.makedirs(os.path.join(HERE, "results"), exist_ok=True)
    path = os.path.join(HERE, "results", time.strftime("%Y%m%d-%H%M%S") + ("-quick" if quick else "") + ".json")
    with open(path, "w") as f:
        json.dump(results, f, indent=1, default=str)
    print()
    print(f"twistls benchmark ({'quick' if quick else 'full'}, medians of {runs}; TLS 1.3 {SUITE} and X25519 forced on every stack; "
          f"load average {results['machine']['loadavg_start'][0]:.1f} at start, {results['machine']['loadavg_end'][0]:.1f} at end)")
    print(f"M2Crypto TwistedProtocolWrapper: {results['m2_wrapper']}")
    if SYSLIBSSL in stacks:
        print(f"{SYSLIBSSL}: Twisted's TLS with pyOpenSSL on the system libssl ({sys_version}), the one twistls runs on; "
              f"'twisted' is pyOpenSSL's wheel ({results['openssl_speed'].get('pyca version', '?')})")
    resumed = results.get("resumed_handshakes")
    if resumed:
        full = results.get("handshakes", {})
        for mode, v in resumed.items():
            f = full.get(mode, {}).get("twistls", {})
            print(f"twistls resumed handshakes {mode.replace('/', ' x')}: {fmt(v['rate'])}/s "
                  f"({fmt(ratio(v['rate'], f.get('rate')), '.2f')}x its full-handshake rate), server {fmt(v['server_ms'], '.2f')} ms each, "
                  f"{100 * v['resumed_fraction']:.0f}% resumed")
    print(table)
    print(f"\nresults: {os.path.relpath(path, ROOT)}  ({results['seconds']:.0f} s)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
