"""The libssl/libcrypto binding under one name: a re-export of :mod:`twistls._libssl`.

Every symbol, constant, hooks class and callback of the binding's topic
modules is importable from here, as it was before the binding was split by
topic.  The names live (and are looked up by the callbacks) in the topic
modules: patch them there, not here.
"""

from __future__ import annotations

from twistls._libssl.chain import *  # noqa: F401,F403
from twistls._libssl.config import *  # noqa: F401,F403
from twistls._libssl.extensions import *  # noqa: F401,F403
from twistls._libssl.handshake import *  # noqa: F401,F403
from twistls._libssl.handshake import _HRR_RANDOM as _HRR_RANDOM
from twistls._libssl.hooks import *  # noqa: F401,F403
from twistls._libssl.hooks import _SSL_SLOT as _SSL_SLOT
from twistls._libssl.lib import *  # noqa: F401,F403
from twistls._libssl.lib import _fn as _fn
from twistls._libssl.records import *  # noqa: F401,F403
from twistls._libssl.sessions import *  # noqa: F401,F403
