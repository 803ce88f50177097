"""`python -m samples.csv_import` (or `make sample-csv_import`)."""

import sys

from .demo import main

sys.exit(main())
