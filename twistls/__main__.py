"""``python -m twistls``."""

import sys

from twistls.commands.cli import main

sys.exit(main())
