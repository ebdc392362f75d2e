"""Long-running fuzz target for the sans-IO engine.

    .venv/bin/python tests/fuzz_engine.py --seconds 3600          # built-in mutator
    .venv/bin/pip install atheris                                 # optional
    .venv/bin/python tests/fuzz_engine.py --atheris -max_total_time=3600 CORPUS_DIR

Input bytes choose a role (client or server engine), a protocol version and
where to split the rest into ``receive_bytes`` calls.  The built-in mode
mutates a real captured handshake (tests/engine/test_fuzz.py's ``Transcript``); with
``--atheris`` libFuzzer drives the input, seeded with the same flights.  Any
exception escaping the engine, a call slower than 5 s, or a crash is a
finding.  The short, bounded run of the same checks is tests/engine/test_fuzz.py.
"""

from __future__ import annotations

import argparse
import os
import random
import sys
import tempfile
import time

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

from tests.engine.test_fuzz import factories, feed, mutate, split, transcript  # noqa: E402

VERSIONS = ("TLSv1.3", "TLSv1.2")
SLOW = 5.0


def one_input(data: bytes) -> None:
    """Fuzz entry point: never raises unless the engine broke its contract."""
    if len(data) < 3:
        return
    client = bool(data[0] & 1)
    version = VERSIONS[(data[0] >> 1) & 1]
    cut_seed = data[1]
    body = data[2:]
    client_cf, server_cf = factories(version)
    engine = client_cf.create_engine() if client else server_cf.create_engine()
    started = time.monotonic()
    try:
        if client:
            engine.start()
            engine.bytes_to_send()
        step = 1 + cut_seed * 7
        feed(engine, split(body, list(range(step, len(body), step))))
    finally:
        engine.free()
    if time.monotonic() - started > SLOW:
        raise AssertionError(f"one input took {time.monotonic() - started:.1f} s")


def seeds() -> list[bytes]:
    """The real flights, framed for :func:`one_input`."""
    out = []
    for v, version in enumerate(VERSIONS):
        t = transcript(version)
        out.append(bytes([v << 1, 255]) + b"".join(t.to_server))
        out.append(bytes([(v << 1) | 1, 255]) + b"".join(t.to_client))
    return out


def builtin(seconds: float, seed: int) -> int:
    rng = random.Random(seed)
    corpus = seeds()
    runs = 0
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        base = rng.choice(corpus)
        ops = [(rng.randrange(7), rng.randrange(1 << 16), rng.randrange(256)) for _ in range(rng.randint(1, 8))]
        data = base[:2] + mutate(base[2:], ops)
        if rng.random() < 0.1:
            data = base[:2] + os.urandom(rng.randrange(1, 4096))
        try:
            one_input(data)
        except BaseException:
            path = os.path.join(tempfile.gettempdir(), f"twistls-fuzz-crash-{os.getpid()}-{runs}.bin")
            with open(path, "wb") as f:
                f.write(data)
            print(f"finding after {runs} runs; input saved to {path}", file=sys.stderr)
            raise
        runs += 1
    print(f"{runs} inputs in {seconds:g} s, no finding (seed {seed})")
    return 0


def main() -> int:
    parser = argparse.ArgumentParser(description="fuzz the twistls engine")
    parser.add_argument("--seconds", type=float, default=60.0)
    parser.add_argument("--seed", type=int, default=int(time.time()))
    parser.add_argument("--atheris", action="store_true", help="use atheris/libFuzzer (pip install atheris)")
    opts, rest = parser.parse_known_args()
    if not opts.atheris:
        return builtin(opts.seconds, opts.seed)
    import atheris  # type: ignore[import-not-found]

    corpus = [a for a in rest if not a.startswith("-")]
    if not corpus:
        corpus_dir = tempfile.mkdtemp(prefix="twistls-fuzz-corpus-")
        for i, s in enumerate(seeds()):
            with open(os.path.join(corpus_dir, f"seed-{i}"), "wb") as f:
                f.write(s)
        rest.append(corpus_dir)
    atheris.instrument_all()  # Python-level coverage of twistls (and what it imported)
    atheris.Setup([sys.argv[0], *rest], one_input)
    atheris.Fuzz()
    return 0


if __name__ == "__main__":
    sys.exit(main())
