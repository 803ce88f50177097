"""`python -m samples.orders` (or `make sample-orders`)."""

import sys

from .demo import main

sys.exit(main())
