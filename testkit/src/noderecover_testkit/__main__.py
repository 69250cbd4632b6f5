"""``python -m noderecover_testkit {build,up,versions}``."""

from __future__ import annotations

import argparse
import signal
import sys
import time
from collections.abc import Sequence
from types import FrameType

from . import build, versions


def _up(args: argparse.Namespace) -> int:
    from .cluster import TestCluster  # needs 'cryptography'

    def on_term(signum: int, frame: FrameType | None) -> None:
        raise KeyboardInterrupt

    signal.signal(signal.SIGTERM, on_term)
    signal.signal(signal.SIGINT, on_term)  # also when started in the background (SIG_IGN)
    cluster = TestCluster(workers=args.workers, keep_tmp=args.keep_tmp)
    t0 = time.monotonic()
    try:
        cluster.start()
        print(f"cluster up in {time.monotonic() - t0:.1f}s", flush=True)
        print(f"export KUBECONFIG={cluster.kubeconfig}", flush=True)
        print(f"kubectl: {cluster.binary('kubectl')}", flush=True)
        print(f"logs: {cluster.log_dir}", flush=True)
        print("Ctrl-C to stop", flush=True)
        while True:
            time.sleep(3600)
    except KeyboardInterrupt:
        print("\nstopping ...", flush=True)
    finally:
        cluster.stop()
    return 0


def main(argv: Sequence[str] | None = None) -> int:
    """Command line entry point."""
    parser = argparse.ArgumentParser(prog="python -m noderecover_testkit")
    sub = parser.add_subparsers(dest="cmd", required=True)
    b = sub.add_parser(
        "build",
        help="build the pinned control plane, helm, promtool and actionlint into the cache"
        " (idempotent)",
    )
    b.add_argument("--force", action="store_true", help="rebuild everything")
    up = sub.add_parser("up", help="start a cluster, print its kubeconfig, wait for Ctrl-C")
    up.add_argument("--workers", type=int, default=3, help="killable worker nodes")
    up.add_argument("--keep-tmp", action="store_true", help="keep the temp folder")
    sub.add_parser("versions", help="print the pins and the cache folder")
    sub.add_parser(
        "image",
        help="build the image (Dockerfile, buildah, a Debian base by mmdebstrap) if missing",
    )
    args = parser.parse_args(argv)
    if args.cmd == "build":
        return build.main(["--force"] if args.force else [])
    if args.cmd == "image":
        from . import image

        return image.main([])
    if args.cmd == "versions":
        for k, v in versions.pins().items():
            print(f"{k}={v}")
        print(f"bin_dir={build.bin_dir()}")
        for k, v in versions.tool_pins().items():
            print(f"{k}={v}")
        print(f"tools_bin_dir={build.tools_bin_dir()}")
        print(f"actionlint={versions.ACTIONLINT_VERSION}")
        print(f"actionlint_bin_dir={build.actionlint_bin_dir()}")
        for k, v in versions.base_pins().items():
            print(f"base_{k}={v}")
        return 0
    return _up(args)


if __name__ == "__main__":
    sys.exit(main())
