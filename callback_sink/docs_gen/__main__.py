"""``python -m callback_sink.docs_gen``: write every generated reference page."""

import sys

from callback_sink.docs_gen import main

sys.exit(main())
