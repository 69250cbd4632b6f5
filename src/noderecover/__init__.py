"""noderecover: gives a StatefulSet back its pod when the node under it dies."""

from importlib.metadata import PackageNotFoundError, version

try:
    __version__ = version("noderecover")
except PackageNotFoundError:  # running from a source tree without an install
    __version__ = "0.0.0+unknown"

ANNOTATION_PREFIX = "noderecover.io/"
USER_AGENT = f"noderecover/{__version__}"
AGENT_USER_AGENT = f"noderecover-agent/{__version__}"
