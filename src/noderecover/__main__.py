import sys

from noderecover.cli import main

sys.exit(main())
