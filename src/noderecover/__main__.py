import sys

from noderecover.entry.cli import main

sys.exit(main())
