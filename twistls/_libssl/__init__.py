"""The narrow ctypes binding to the libssl/libcrypto that M2Crypto is linked to.

M2Crypto 0.51 lacks some OpenSSL calls twistls needs (clearing options,
minimum/maximum protocol version, TLS 1.3 ciphersuites, groups, the security
level, ``SSL_get_error`` after ``SSL_do_handshake``, a verify callback that
records the failing depth, ALPN, SNI, session and ticket-key callbacks).  This
package reaches exactly those symbols in the *same* shared library instance
M2Crypto's extension loaded, so pointers taken from M2Crypto objects
(``int(ptr)``) are valid here.  Its modules, by topic:

* :mod:`.lib` loads the library, once, and declares every symbol and constant;
* :mod:`.hooks` holds the per-connection/per-context state callbacks reach;
* :mod:`.handshake` the verify, ClientHello and ServerHello callbacks;
* :mod:`.extensions` ALPN, server SNI and the key log;
* :mod:`.sessions` the session cache and session-ticket keys;
* :mod:`.chain` chains in DER and re-verification on another path;
* :mod:`.config` context settings and connection queries;
* :mod:`.records` the engine's read path (decrypted records into one buffer).

:mod:`twistls._openssl` re-exports all of it under one name.

Rules kept here (see ``shared/LIBSSL.md``):

* every symbol has explicit ``argtypes``/``restype``; pointers are ``c_void_p``;
* callbacks are module-level ``CFUNCTYPE`` objects that live as long as the
  process, catch ``BaseException`` and never raise into C;
* every call that can fail is checked by the caller.
"""
