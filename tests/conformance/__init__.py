"""Server-certificate path-validation conformance cases, generated at test time.

:mod:`tests.conformance.cases` builds every case with :mod:`cryptography`
(no key material is committed); ``tests/checker/test_pkix.py`` and
``bench/conformance.py`` run them.
"""
