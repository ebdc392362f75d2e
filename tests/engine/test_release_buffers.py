"""A connection that moved a burst and went idle gives its memory BIOs'
capacity back (they never shrink by themselves)."""

from __future__ import annotations

import ctypes

from twisted.trial.unittest import SynchronousTestCase

from tests._pump import EnginePair
from tests.engine.test_engine import _client, _server
from twistls import _openssl

_BIO_C_GET_BUF_MEM_PTR = 115
_BIO_ctrl = _openssl.libcrypto["BIO_ctrl"]  # a function object of its own: nothing shared is retyped
_BIO_ctrl.restype = ctypes.c_long
_BIO_ctrl.argtypes = [ctypes.c_void_p, ctypes.c_int, ctypes.c_long, ctypes.c_void_p]


class _BufMem(ctypes.Structure):  # struct buf_mem_st (openssl/buffer.h)
    _fields_ = [("length", ctypes.c_size_t), ("data", ctypes.c_void_p), ("max", ctypes.c_size_t), ("flags", ctypes.c_ulong)]


def capacity(bio: object) -> int:
    """Bytes a memory BIO has allocated."""
    ptr = ctypes.POINTER(_BufMem)()
    _BIO_ctrl(int(bio), _BIO_C_GET_BUF_MEM_PTR, 0, ctypes.byref(ptr))  # type: ignore[call-overload]
    return int(ptr.contents.max) if ptr else 0


class ReleaseBuffersTests(SynchronousTestCase):
    def burst(self) -> EnginePair:
        pair = EnginePair(_client().create_engine(), _server().create_engine())
        pair.start()
        pair.pump()
        pair.server.send_plaintext(b"s" * (1 << 20))
        pair.client.send_plaintext(b"c" * (1 << 20))
        pair.pump()
        return pair

    def test_burst_then_release(self) -> None:
        pair = self.burst()
        engine = pair.server
        self.assertGreater(engine.big_io, 0)
        self.assertGreater(capacity(engine._rbio) + capacity(engine._wbio), 1 << 20)
        self.assertTrue(engine.release_buffers())
        self.assertLess(capacity(engine._rbio) + capacity(engine._wbio), 1 << 12)
        self.assertEqual(engine.big_io, 0)
        self.assertFalse(engine.release_buffers(), "nothing left to give back")
        # The connection works on as before.
        pair.client_events.clear()
        engine.send_plaintext(b"after")
        pair.pump()
        self.assertEqual(b"".join(e.data for e in pair.client_events), b"after")

    def test_not_while_data_waits(self) -> None:
        pair = self.burst()
        engine = pair.server
        engine.send_plaintext(b"x" * 100000)  # ciphertext waiting in the write BIO
        self.assertFalse(engine.release_buffers())
        out = engine.bytes_to_send()
        self.assertGreater(len(out), 100000)
        self.assertTrue(engine.release_buffers())

    def test_small_traffic_keeps_nothing_to_release(self) -> None:
        pair = EnginePair(_client().create_engine(), _server().create_engine())
        pair.start()
        pair.pump()
        pair.server.send_plaintext(b"ping")
        pair.pump()
        self.assertEqual(pair.server.big_io, 0)
        self.assertFalse(pair.server.release_buffers())


class WrapperReleaseTests(SynchronousTestCase):
    """The wrapper gives the buffers back after 2 s without big reads or writes, not during a burst."""

    def test_released_after_quiet_period(self) -> None:
        from tests.protocol.test_protocol import Connection

        conn = Connection()
        conn.flush()
        server = conn.server_wrapper
        engine = server._engine
        assert engine is not None
        for _ in range(3):  # a burst over three seconds: nothing is released meanwhile
            server.write(b"z" * (1 << 20))
            conn.flush()
            self.assertGreater(engine.big_io, 0)
            conn.clock.advance(1.0)
            conn.flush()
        self.assertGreater(engine.big_io, 0)
        self.assertGreater(capacity(engine._wbio), 1 << 16)
        conn.clock.advance(2.1)  # quiet: the next look releases
        conn.clock.advance(2.1)
        self.assertEqual(engine.big_io, 0)
        self.assertLess(capacity(engine._wbio) + capacity(engine._rbio), 1 << 12)
        self.assertEqual(len(conn.client.data), 3 << 20)
        self.assertEqual(conn.clock.getDelayedCalls(), [])  # nothing left scheduled for it
