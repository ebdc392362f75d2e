# Twisted plugin drop-in for twistls: registers the ``twistls:`` endpoint strings.
# Declarations only; the parsers live in twistls._parsers (also exported by
# twistls.endpoints), which loads M2Crypto only when a string is parsed.
# There is deliberately no __init__.py in twisted/ or twisted/plugins/.
from twistls._parsers import _ClientParser, _ServerParser

twistlsClientParser = _ClientParser()
twistlsServerParser = _ServerParser()
