"""``python -m sink`` is ``callback-sink``."""

import sys

from sink.cli import main

sys.exit(main())
