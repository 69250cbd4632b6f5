"""A BMC on pyghmi's server side (pyghmi.ipmi.bmc), for the fence tests: its own process.

    BMC_PASSWORD=W python -m tests.ipmi_bmc --port P --user U --state FILE [--ignore-off]

Power state starts on; it is written to FILE at start and at every change (the test reads
the machine's side from there, not from the fence client). `--ignore-off`: a BMC that
accepts the power-off and never powers off (a provider that lies cannot be told from it by
the exit code alone: the read-back must catch it).
"""

from __future__ import annotations

import argparse
import os
from pathlib import Path

from pyghmi.ipmi import bmc


class Bmc(bmc.Bmc):  # type: ignore[misc]
    def __init__(self, user: str, password: str, port: int, state: Path, ignore: bool) -> None:
        super().__init__({user: password}, port=port, address="127.0.0.1")
        self._state_file = state
        self._ignore = ignore
        self._set("on")

    def _set(self, power: str) -> None:
        self.power = power
        tmp = self._state_file.with_suffix(".tmp")
        tmp.write_text(power)
        tmp.replace(self._state_file)

    def get_power_state(self) -> str:
        return self.power

    def power_off(self) -> None:
        if not self._ignore:
            self._set("off")

    def power_on(self) -> None:
        self._set("on")

    def power_reset(self) -> None:
        self._set("on")

    def power_cycle(self) -> None:
        self._set("on")

    def power_shutdown(self) -> None:
        if not self._ignore:
            self._set("off")


def main() -> None:
    p = argparse.ArgumentParser()
    p.add_argument("--port", type=int, required=True)
    p.add_argument("--user", required=True)
    p.add_argument("--state", type=Path, required=True)
    p.add_argument("--ignore-off", action="store_true")
    a = p.parse_args()
    Bmc(a.user, os.environ["BMC_PASSWORD"], a.port, a.state, a.ignore_off).listen()


if __name__ == "__main__":
    main()
