"""Build shim; the metadata lives in setup.cfg.

``twisted/plugins/`` is shipped as package data of the ``twisted.plugins``
namespace (there is deliberately no ``__init__.py`` there: it would shadow
Twisted's own).  After installing, regenerate Twisted's plugin cache with
``python -c "from twisted.plugin import IPlugin, getPlugins; list(getPlugins(IPlugin))"``
(``run.sh`` does it); without that Twisted still finds the plugins, only slower.
"""

from setuptools import setup

setup(
    packages=["twistls", "twisted.plugins"],
    package_data={"twistls": ["py.typed"], "twisted.plugins": ["twistls_*.py"]},
)
