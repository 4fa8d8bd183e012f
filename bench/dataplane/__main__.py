"""``python -m bench.dataplane``: run the data-plane benchmark."""

import sys

from bench.dataplane.cli import main

sys.exit(main())
