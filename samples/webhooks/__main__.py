"""`python -m samples.webhooks` (or `make sample-webhooks`); `serve` and `replay EVENT_ID` too."""

import sys

from .demo import main

sys.exit(main())
