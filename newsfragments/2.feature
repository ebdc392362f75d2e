The Checker runs inside a verifying client's handshake, so a rejected server receives a TLS alert (bad_certificate or handshake_failure) rather than an EOF.
