"""``python -m gossip.sim``."""

import sys

from gossip.sim.cli import main

sys.exit(main())
