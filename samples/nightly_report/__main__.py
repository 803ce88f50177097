"""`python -m samples.nightly_report` (or `make sample-nightly_report`)."""

import sys

from .demo import main

sys.exit(main())
