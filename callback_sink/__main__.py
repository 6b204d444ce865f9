"""``python -m callback_sink`` is ``callback-sink``."""

import sys

from callback_sink.cli import main

sys.exit(main())
