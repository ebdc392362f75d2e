"""``python -m twistls``."""

import sys

from twistls.cli import main

sys.exit(main())
