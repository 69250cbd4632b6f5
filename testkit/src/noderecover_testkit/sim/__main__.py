"""`python -m noderecover_testkit.sim`: see run.py."""

import sys

from noderecover_testkit.sim.run import main

sys.exit(main())
