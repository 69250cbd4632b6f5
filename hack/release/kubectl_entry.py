"""Entry script of the standalone ``kubectl-noderecover`` the release builds with PyInstaller
(.github/workflows/release.yml): the same ``main`` as the installed console script."""

import sys

from noderecover.entry.kubectl import main

sys.exit(main())
