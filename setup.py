"""Build shim; the metadata lives in setup.cfg.

``twisted/plugins/`` is shipped as package data of the ``twisted.plugins``
namespace (there is deliberately no ``__init__.py`` there: it would shadow
Twisted's own).  After installing, regenerate Twisted's plugin cache with
``python -c "from twisted.plugin import IPlugin, getPlugins; list(getPlugins(IPlugin))"``
(``run.sh`` does it); without that Twisted still finds the plugins, only slower.
This holds for ``pip install -e .`` too (see ``package_dir`` below).
"""

from setuptools import setup

# package_dir={"": "."} makes ``pip install -e .`` write a plain ``.pth`` naming
# the checkout (setuptools' strategy for an explicit root, as for a src layout)
# instead of an import finder that maps only the ``twistls`` package: Twisted's
# plugin scan looks for ``twisted/plugins`` directories on ``sys.path``, so only
# the ``.pth`` lets an editable install keep the ``twistls:`` endpoint strings
# and the ``twistd twistls`` plugin.  Regular installs are unchanged.  The
# package list is setup.cfg's ``packages`` (one list, not two).
setup(
    package_dir={"": "."},
    package_data={"twistls": ["py.typed"], "twisted.plugins": ["twistls_*.py"]},
)
