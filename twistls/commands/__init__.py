"""The commands built on twistls, kept apart from the library.

* :mod:`twistls.commands.cli`: ``python -m twistls`` / ``twistls``
  (``probe``, ``verify``, ``mkcert``, ``mkticketkey``, ``demo``);
  ``probe`` is :mod:`~twistls.commands._probe` (the STARTTLS dialogues in
  :mod:`~twistls.commands._starttls`, the report in
  :mod:`~twistls.commands._report`), ``mkcert`` is
  :mod:`~twistls.commands._mkcert`, ``demo`` is
  :mod:`~twistls.commands._demo`; ``verify`` is :mod:`twistls._verify`.
* ``twistd twistls echo|proxy``: :mod:`twistls.tap` (the module the
  twistd plugin names) over :mod:`~twistls.commands._tapoptions` (the
  option parsing both share), :mod:`~twistls.commands._echo`,
  :mod:`~twistls.commands._proxy` and :mod:`~twistls.commands._supervision`
  (draining, reload on ``SIGHUP``, ``--workers``).

Nothing in the library imports this package.
"""
