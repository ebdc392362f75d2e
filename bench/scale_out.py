"""Scale-out (issue 16), in one run: ``python bench/scale_out.py [--quick] [--seconds S]``.

Real ``twistd -n twistls echo`` servers on 127.0.0.1, one process against
``--workers 2`` (``SO_REUSEPORT``), measured in the same run so that their
ratios see the same machine load:

* resumption across workers: M resumption attempts, each a new TCP connection
  offering the session of the previous one, against 2 workers with and without
  a shared ``--ticket-key-file`` (and against one process, for reference);
* handshakes/s, full and resumed, with the load generator in its own processes
  (``--clients`` Python ``ssl`` loops, one connection at a time each: verified
  handshake, 1-byte echo, close_notify);
* the server's CPU per handshake, read from ``/proc/<pid>/stat`` (utime +
  stime) of each worker before and after the load;
* a control: N independent ``reusePort=yes`` processes without a supervisor,
  which tells what the worker machinery costs from what N processes cost.

See bench/README.md ("Scale-out").  Results also go to
``bench/results/scale-out-<time>.json``.  Every wait is bounded and every
process started here is killed (by process group) on the way out.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import shutil
import signal
import socket
import ssl
import subprocess
import sys
import tempfile
import time
from typing import Any

HERE = os.path.dirname(os.path.abspath(__file__))
ROOT = os.path.dirname(HERE)
sys.path.insert(0, HERE)

PY = sys.executable
TWISTD = "import sys; from twisted.scripts.twistd import run; sys.argv[0] = 'twistd'; run()"
# The same TLS 1.3 suite and groups as bench/run.py; Python's ssl has no
# setter for them, so the load generators get them from OPENSSL_CNF.
from run import OPENSSL_CNF, fmt, free_port, log, median, proc_cpu, ratio  # noqa: E402


# ---------------------------------------------------------------------------------------------
# /proc
# ---------------------------------------------------------------------------------------------


def _stat_fields(pid: int) -> list[str]:
    with open(f"/proc/{pid}/stat") as f:
        return f.read().rsplit(")", 1)[1].split()


def children(pid: int) -> list[int]:
    found = []
    for entry in os.listdir("/proc"):
        if entry.isdigit():
            try:
                if int(_stat_fields(int(entry))[1]) == pid:
                    found.append(int(entry))
            except (OSError, IndexError, ValueError):
                continue
    return sorted(found)


def machine_times() -> tuple[int, int]:
    """(busy, total) jiffies of all cores, from /proc/stat."""
    with open("/proc/stat") as f:
        values = [int(v) for v in f.readline().split()[1:]]
    idle = values[3] + (values[4] if len(values) > 4 else 0)  # idle + iowait
    return sum(values) - idle, sum(values)


def load_average() -> float:
    return os.getloadavg()[0]


# ---------------------------------------------------------------------------------------------
# servers
# ---------------------------------------------------------------------------------------------


def _esc(path: str) -> str:
    return path.replace("\\", "\\\\").replace(":", "\\:")


def _env() -> dict[str, str]:
    env = dict(os.environ)
    env["PYTHONPATH"] = ROOT + os.pathsep + env.get("PYTHONPATH", "")
    return env


class Server:
    """``twistd -n twistls echo`` in its own process group(s), in one of three shapes:

    * ``"single"``: one process (no ``--workers``);
    * ``"workers"``: ``--workers N``, a supervisor and N worker processes (``SO_REUSEPORT``);
    * ``"reuseport"``: N independent processes, each ``--listen twistls:...:reusePort=yes``
      (no supervisor): the control that tells the worker machinery from N processes.
    """

    def __init__(self, name: str, shape: str, count: int, key_file: str | None, cert: str, key: str, tmp: str) -> None:
        self.name = name
        self.shape = shape
        self.count = count if shape != "single" else 1
        self.port = free_port()
        listen = f"twistls:{self.port}:certificate={_esc(cert)}:privateKey={_esc(key)}:interface=127.0.0.1"
        extra: list[str] = []
        if shape == "reuseport":
            listen += ":reusePort=yes" + (f":ticketKeyFile={_esc(key_file)}" if key_file else "")
        elif key_file:
            extra += ["--ticket-key-file", key_file]
        if shape == "workers":
            extra += ["--workers", str(count)]
        argv = [PY, "-c", TWISTD, "-n", "--pidfile=", "twistls", "echo", "--listen", listen, "--drain-timeout", "1", *extra]
        self.argv = argv
        slug = "".join(c if c.isalnum() else "-" for c in name)
        self.log_path = os.path.join(tmp, f"{slug}.log")
        self._out = open(self.log_path, "wb")
        self.procs = [
            subprocess.Popen(argv, stdout=self._out, stderr=subprocess.STDOUT, cwd=tmp, env=_env(), start_new_session=True)
            for _ in range(self.count if shape == "reuseport" else 1)
        ]
        self.pids: list[int] = []

    @property
    def supervisor(self) -> int | None:
        return self.procs[0].pid if self.shape == "workers" else None

    def text(self) -> str:
        with open(self.log_path, encoding="utf-8", errors="replace") as f:
            return f.read()

    def _server_pids(self) -> list[int]:
        if self.shape == "workers":
            return children(self.procs[0].pid)
        return [p.pid for p in self.procs]

    def wait_ready(self, cafile: str, seconds: float = 60.0) -> None:
        """Until every process has started listening and a TLS connection is echoed."""
        deadline = time.monotonic() + seconds
        ctx = client_context(cafile)
        while time.monotonic() < deadline:
            for p in self.procs:
                if p.poll() is not None:
                    raise RuntimeError(f"{self.name}: twistd exited with {p.returncode}:\n{self.text()}")
            pids = self._server_pids()
            if self.text().count(f"starting on {self.port}") >= self.count and len(pids) == self.count:
                try:
                    one_connection(ctx, self.port, None)
                except (OSError, ssl.SSLError):
                    pass
                else:
                    self.pids = pids
                    time.sleep(0.3)
                    return
            time.sleep(0.1)
        raise RuntimeError(f"{self.name}: not ready after {seconds}s:\n{self.text()}")

    def stop(self) -> None:
        """SIGTERM to each process group, SIGKILL to whatever is left; bounded."""
        try:
            for p in self.procs:
                if p.poll() is None:
                    try:
                        os.killpg(p.pid, signal.SIGTERM)
                    except ProcessLookupError:
                        pass
            for p in self.procs:
                try:
                    p.wait(timeout=15)
                except subprocess.TimeoutExpired:
                    log(f"{self.name}: did not stop on SIGTERM, killing it")
                try:
                    os.killpg(p.pid, signal.SIGKILL)  # workers left behind, if any
                except (ProcessLookupError, PermissionError):
                    pass
                try:
                    p.wait(timeout=10)
                except subprocess.TimeoutExpired:
                    pass
        finally:
            self._out.close()


# ---------------------------------------------------------------------------------------------
# clients
# ---------------------------------------------------------------------------------------------


_LAST_SUITE: list[str | None] = [None]


def client_context(cafile: str) -> ssl.SSLContext:
    return ssl.create_default_context(cafile=cafile)  # verifies the chain and "localhost"


def one_connection(ctx: ssl.SSLContext, port: int, session: ssl.SSLSession | None) -> tuple[bool, ssl.SSLSession | None]:
    """Handshake (offering ``session``), 1-byte echo, close_notify; (resumed, the session to offer next)."""
    with socket.create_connection(("127.0.0.1", port), timeout=10) as raw:
        s = ctx.wrap_socket(raw, server_hostname="localhost", session=session)
        try:
            s.sendall(b"x")
            if s.recv(1) != b"x":  # reading also takes in the TLS 1.3 tickets, sent before the echo
                raise OSError("no echo")
            resumed, new = bool(s.session_reused), s.session
            cipher = s.cipher()
            _LAST_SUITE[0] = cipher[0] if cipher else None
            s.unwrap()
        finally:
            s.close()
    return resumed, new


def resumption_rate(cafile: str, port: int, attempts: int) -> float:
    """``attempts`` new connections, each offering the session of the one before."""
    ctx = client_context(cafile)
    _, session = one_connection(ctx, port, None)
    resumed = 0
    for _ in range(attempts):
        r, session = one_connection(ctx, port, session)
        resumed += r
    return resumed / attempts


def load_client(port: int, cafile: str, mode: str, start: float, end: float) -> None:
    """One load-generator process (``--_load``): a tight loop of connections from ``start`` to
    ``end`` (wall clock), one at a time; prints a JSON summary."""
    ctx = client_context(cafile)
    session = None
    suite = None
    while time.time() < start - 0.1:  # warm-up (and the first session), before the clock starts
        try:
            _, session = one_connection(ctx, port, None)
            break
        except (OSError, ssl.SSLError):
            time.sleep(0.1)
    delay = start - time.time()
    if delay > 0:
        time.sleep(delay)
    done = resumed = errors = 0
    cpu0 = time.process_time()
    while time.time() < end:
        try:
            r, new = one_connection(ctx, port, session if mode == "resumed" else None)
        except (OSError, ssl.SSLError):
            errors += 1
            time.sleep(0.01)
            continue
        if time.time() <= end:
            done += 1
            resumed += r
        if mode == "resumed":
            session = new
        suite = suite or _LAST_SUITE[0]
    cpu = time.process_time() - cpu0
    print(json.dumps({"handshakes": done, "resumed": resumed, "errors": errors, "cpu": cpu, "suite": suite}), flush=True)


def measure(server: Server, mode: str, seconds: float, clients: int, cafile: str, cnf: str, tmp: str) -> dict[str, Any]:
    """``clients`` load-generator processes against ``server`` for ``seconds``."""
    ahead = 0.8
    start = time.time() + ahead
    end = start + seconds
    env = _env()
    env["OPENSSL_CONF"] = cnf
    procs = [
        subprocess.Popen(
            [PY, os.path.abspath(__file__), "--_load", str(server.port), cafile, mode, repr(start), repr(end)],
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
            env=env,
            cwd=tmp,
            start_new_session=True,
        )
        for _ in range(clients)
    ]
    try:
        time.sleep(max(0.0, start - time.time()))
        cpu0 = {pid: proc_cpu(pid) for pid in server.pids}
        sup0 = proc_cpu(server.supervisor) if server.supervisor else 0.0
        m0 = machine_times()
        time.sleep(max(0.0, end - time.time()))
        cpu1 = {pid: proc_cpu(pid) for pid in server.pids}
        sup1 = proc_cpu(server.supervisor) if server.supervisor else 0.0
        m1 = machine_times()
        outs = []
        for p in procs:
            out, err = p.communicate(timeout=seconds + 30)
            if p.returncode != 0 or not out.strip():
                raise RuntimeError(f"load client exited with {p.returncode}: {err[-2000:]}")
            outs.append(json.loads(out.strip().splitlines()[-1]))
    finally:
        for p in procs:
            if p.poll() is None:
                try:
                    os.killpg(p.pid, signal.SIGKILL)
                except ProcessLookupError:
                    pass
                p.wait(timeout=10)
    n = sum(o["handshakes"] for o in outs)
    worker_cpu = {pid: cpu1[pid] - cpu0[pid] for pid in server.pids}
    total_cpu = sum(worker_cpu.values())
    per_worker = []
    for pid in server.pids:
        # SO_REUSEPORT picks the listening socket by a hash of the connection's addresses and
        # ports, whatever the load: each of N processes gets n/N +- sqrt(n)/N of the connections
        # (1-2 % at these counts; no per-process counter is needed, and Linux's /proc/<pid>/io
        # does not count socket calls).
        served = n / len(server.pids)
        per_worker.append({"pid": pid, "cpu_s": worker_cpu[pid], "ms_per_hs": 1000 * worker_cpu[pid] / served if served else None})
    return {
        "config": server.name,
        "mode": mode,
        "seconds": seconds,
        "clients": clients,
        "handshakes": n,
        "hs_per_s": n / seconds,
        "resumed_fraction": sum(o["resumed"] for o in outs) / n if n else 0.0,
        "errors": sum(o["errors"] for o in outs),
        "server_cpu_s": total_cpu,
        "server_ms_per_hs": 1000 * total_cpu / n if n else None,
        "supervisor_cpu_s": sup1 - sup0 if server.supervisor else None,
        "workers": per_worker,
        "client_ms_per_hs": 1000 * sum(o["cpu"] for o in outs) / n if n else None,
        "machine_busy": (m1[0] - m0[0]) / (m1[1] - m0[1]) if m1[1] > m0[1] else None,
        "suite": outs[0]["suite"] if outs else None,
    }


# ---------------------------------------------------------------------------------------------
# report
# ---------------------------------------------------------------------------------------------


def table(rows: list[list[str]]) -> str:
    widths = [max(len(r[i]) for r in rows) for i in range(len(rows[0]))]
    lines = []
    for k, r in enumerate(rows):
        lines.append("  ".join(c.ljust(widths[i]) if i == 0 else c.rjust(widths[i]) for i, c in enumerate(r)).rstrip())
        if k == 0:
            lines.append("  ".join("-" * w for w in widths))
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--seconds", type=float, default=None, help="seconds per load measurement (default 5; 1 with --quick)")
    ap.add_argument("--runs", type=int, default=None, help="runs per figure, medians printed (default 2; 1 with --quick)")
    ap.add_argument("--clients", type=int, default=None, help="load-generator processes, one connection at a time each (default 4; 2 with --quick)")
    ap.add_argument("--attempts", type=int, default=None, help="resumption attempts per server (default 200; 20 with --quick)")
    ap.add_argument("--workers", type=int, default=2, help="workers of the scaled-out server (default 2)")
    ap.add_argument("--key", choices=("rsa", "ecdsa"), default="rsa", help="server key type (default rsa: RSA-2048)")
    ap.add_argument("--no-control", action="store_true", help="leave out the control: N independent reusePort=yes processes")
    ap.add_argument("--quick", action="store_true", help="smoke run: short and small")
    ap.add_argument("--no-json", action="store_true", help="do not write bench/results/scale-out-<time>.json")
    args = ap.parse_args(argv)
    seconds = args.seconds if args.seconds is not None else (1.0 if args.quick else 5.0)
    runs = args.runs if args.runs is not None else (1 if args.quick else 2)
    clients = args.clients if args.clients is not None else (2 if args.quick else 4)
    attempts = args.attempts if args.attempts is not None else (20 if args.quick else 200)
    n_workers = args.workers
    if not sys.platform.startswith("linux") or not hasattr(socket, "SO_REUSEPORT"):
        log("scale_out: --workers needs Linux (SO_REUSEPORT and /proc)")
        return 2

    import _certs

    began = time.time()
    load_start = load_average()
    tmp = tempfile.mkdtemp(prefix="twistls-scale-out-")
    servers: list[Server] = []
    try:
        _certs.make(tmp)
        ca, cert, key = _certs.paths(tmp, args.key)
        cnf = os.path.join(tmp, "openssl.cnf")
        with open(cnf, "w") as f:
            f.write(OPENSSL_CNF)
        key_file = os.path.join(tmp, "tickets.key")
        subprocess.run([PY, "-m", "twistls", "mkticketkey", key_file], check=True, capture_output=True, timeout=60, cwd=ROOT, env=_env())

        one = Server("1 process", "single", 1, key_file, cert, key, tmp)
        many = Server(f"{n_workers} workers", "workers", n_workers, key_file, cert, key, tmp)
        nokey = Server(f"{n_workers} workers, no key file", "workers", n_workers, None, cert, key, tmp)
        servers += [one, many, nokey]
        control = None
        if not args.no_control:
            control = Server(f"{n_workers} processes, reusePort=yes", "reuseport", n_workers, key_file, cert, key, tmp)
            servers.append(control)
        for s in servers:
            s.wait_ready(ca)
        log(f"servers ready: {'; '.join(f'{s.name} on {s.port} (pids {s.pids})' for s in servers)}")
        loaded = [s for s in (one, many, control) if s is not None]

        # Resumption across workers, one connection at a time from this process.
        rates = {}
        for s in [many, nokey] + [s for s in loaded if s is not many]:
            rates[s.name] = resumption_rate(ca, s.port, attempts)
            log(f"resumption rate, {s.name}: {rates[s.name]:.0%} of {attempts}")
        nokey.stop()
        servers.remove(nokey)

        # Load: the configurations interleaved within each run, full then resumed.
        results: list[dict[str, Any]] = []
        for run in range(runs):
            for mode in ("full", "resumed"):
                for s in loaded:
                    r = measure(s, mode, seconds, clients, ca, cnf, tmp)
                    r["run"] = run
                    results.append(r)
                    log(
                        f"run {run + 1}/{runs} {mode:7s} {s.name}: {r['hs_per_s']:.0f} hs/s, server {fmt(r['server_ms_per_hs'], '.2f')} ms/hs "
                        f"(each {', '.join(fmt(w['ms_per_hs'], '.2f') for w in r['workers'])}), client {fmt(r['client_ms_per_hs'], '.2f')} ms/hs, "
                        f"{r['resumed_fraction']:.0%} resumed, {r['errors']} errors, machine {fmt(r['machine_busy'], '.0%')} busy, "
                        f"supervisor {fmt(r['supervisor_cpu_s'], '.2f')} s CPU"
                    )
        for s in list(servers):
            s.stop()
            servers.remove(s)
    finally:
        for s in servers:
            s.stop()
        shutil.rmtree(tmp, ignore_errors=True)

    def pick(name: str, mode: str, field: str) -> float | None:
        return median([r[field] for r in results if r["config"] == name and r["mode"] == mode])

    def each_ms(name: str, mode: str) -> str:
        rs = [r for r in results if r["config"] == name and r["mode"] == mode]
        return " / ".join(fmt(median([r["workers"][i]["ms_per_hs"] for r in rs]), ".2f") for i in range(len(rs[0]["workers"])))

    def split(name: str, mode: str) -> str:
        rs = [r for r in results if r["config"] == name and r["mode"] == mode]
        k = len(rs[0]["workers"])
        if k == 1:
            return "100%"
        shares = [median([r["workers"][i]["cpu_s"] / r["server_cpu_s"] if r["server_cpu_s"] else None for r in rs]) for i in range(k)]
        return "/".join(fmt(100 * v if v is not None else None, ".0f") for v in shares) + "%"

    def pct(v: float | None) -> str:
        return "-" if v is None else f"{100 * v:.0f}%"

    load_end = load_average()
    suite = next((r["suite"] for r in results if r.get("suite")), "?")
    print(
        f"twistls scale-out benchmark ({'quick' if args.quick else 'full'}, {'medians of ' + str(runs) + ' runs' if runs > 1 else '1 run'}, "
        f"{seconds:g} s per figure; {clients} load-generator processes, one connection at a time each; {args.key.upper()} server key, "
        f"{suite}; {os.cpu_count()} cores; load average {load_start:.1f} at start, {load_end:.1f} at end)"
    )
    rows = [[
        "config", "hs/s full", "hs/s resumed", "srv ms/hs full", "srv ms/hs resumed", "each proc ms/hs full",
        "each proc ms/hs resumed", "CPU split full", "cli ms/hs full", "machine busy", "resumed under load", "resumption rate",
    ]]
    for s in loaded:
        name = s.name
        rows.append([
            name,
            fmt(pick(name, "full", "hs_per_s"), ".0f"),
            fmt(pick(name, "resumed", "hs_per_s"), ".0f"),
            fmt(pick(name, "full", "server_ms_per_hs"), ".2f"),
            fmt(pick(name, "resumed", "server_ms_per_hs"), ".2f"),
            each_ms(name, "full"),
            each_ms(name, "resumed"),
            split(name, "full"),
            fmt(pick(name, "full", "client_ms_per_hs"), ".2f"),
            pct(pick(name, "full", "machine_busy")),
            pct(pick(name, "resumed", "resumed_fraction")),
            f"{rates[name]:.0%}",
        ])
    rows.append([nokey.name] + ["-"] * 10 + [f"{rates[nokey.name]:.0%}"])
    print(table(rows))
    print()

    fields = (("hs_per_s", "full"), ("hs_per_s", "resumed"), ("server_ms_per_hs", "full"), ("server_ms_per_hs", "resumed"))
    ratio_rows = [["ratio", "hs/s full", "hs/s resumed", "srv ms/hs full", "srv ms/hs resumed"]]
    ratios: dict[str, dict[str, float | None]] = {}
    pairs = [(many, one)] + ([(control, one), (many, control)] if control else [])
    for a, b in pairs:
        label = f"{a.name} / {b.name}"
        ratios[label] = {f"{f}/{m}": ratio(pick(a.name, m, f), pick(b.name, m, f)) for f, m in fields}
        ratio_rows.append([label] + [fmt(v, ".2f") + "x" if v is not None else "-" for v in ratios[label].values()])
    print(table(ratio_rows))
    print()

    shared, unshared = rates[many.name], rates[nokey.name]
    print(f"{'PASS' if shared >= 0.95 else 'MISS'}  resumption across {n_workers} workers with a shared --ticket-key-file: {shared:.0%} of {attempts} attempts (target >= 95%)")
    print(f"info  resumption across {n_workers} workers without it (a random key per worker): {unshared:.0%} of {attempts} (expected about 1/{n_workers} = {1 / n_workers:.0%})")
    main_ratios = ratios[f"{many.name} / {one.name}"]
    for mode in ("full", "resumed"):
        v = main_ratios[f"server_ms_per_hs/{mode}"]
        if v is not None:
            print(f"{'PASS' if v <= 1.10 else 'MISS'}  server CPU per {mode} handshake, {many.name} / {one.name}: {v:.2f} (target: does not rise with N, <= 1.10)")
    if control:
        for mode in ("full", "resumed"):
            v = ratios[f"{many.name} / {control.name}"][f"server_ms_per_hs/{mode}"]
            if v is not None:
                print(f"info  server CPU per {mode} handshake, {many.name} / {control.name} (N processes, no supervisor): {v:.2f}")
    print(
        f"note  this machine has {os.cpu_count()} cores, shared by the server processes and the {clients} load-generator processes "
        f"(and whatever else runs): the load generator competes with the workers for the same cores, so handshakes/s cannot "
        f"grow with the workers here; the server CPU per handshake is what carries over to a larger machine."
    )
    for mode in ("full", "resumed"):
        lo, hi = pick(one.name, mode, "server_ms_per_hs"), pick(many.name, mode, "server_ms_per_hs")
        if lo and hi:
            print(
                f"      {mode}: {lo:.2f}-{hi:.2f} ms of server CPU per handshake, so one core per worker (clients elsewhere) "
                f"serves about {1000 / hi:.0f}-{1000 / lo:.0f}/s per worker: "
                + ", ".join(f"{k} workers ~{k * 1000 / hi:.0f}-{k * 1000 / lo:.0f}/s" for k in (2, 4, 8))
            )
    elapsed = time.time() - began
    if not args.no_json:
        out_dir = os.path.join(HERE, "results")
        os.makedirs(out_dir, exist_ok=True)
        path = os.path.join(out_dir, time.strftime("scale-out-%Y%m%d-%H%M%S.json", time.gmtime()))
        with open(path, "w") as f:
            json.dump(
                {
                    "args": vars(args), "seconds": seconds, "runs": runs, "clients": clients, "attempts": attempts,
                    "python": platform.python_version(), "openssl": ssl.OPENSSL_VERSION, "cores": os.cpu_count(),
                    "load_average": [load_start, load_end], "resumption_rates": rates, "ratios": ratios, "results": results,
                    "elapsed_s": elapsed,
                },
                f,
                indent=1,
            )
        print(f"\nresults: {os.path.relpath(path, ROOT)}  ({elapsed:.0f} s)")
    else:
        print(f"\n({elapsed:.0f} s)")
    return 0


if __name__ == "__main__":
    if len(sys.argv) == 7 and sys.argv[1] == "--_load":
        load_client(int(sys.argv[2]), sys.argv[3], sys.argv[4], float(sys.argv[5]), float(sys.argv[6]))
        sys.exit(0)
    sys.exit(main())
