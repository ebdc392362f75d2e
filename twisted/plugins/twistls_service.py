# Twisted plugin drop-in for twistls: ``twistd twistls`` (see twistls.tap).
# A declaration only; the module is imported when the plugin is used.
# There is deliberately no __init__.py in twisted/ or twisted/plugins/.
from twisted.application.service import ServiceMaker

twistlsService = ServiceMaker(
    "twistls",
    "twistls.tap",
    "TLS terminating proxy and TLS/STARTTLS echo server built on twistls",
    "twistls",
)
