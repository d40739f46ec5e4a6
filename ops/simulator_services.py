"""The simulators as long-running services (console scripts churnops-simulate-http and
churnops-simulate-kinesis): a round every SIMULATE_INTERVAL_S, a heartbeat file after each one
(`churnops-health heartbeat`). Apart from ops/services.py so that the health check and the stack
supervisor do not import the simulators (pandas) to read a heartbeat."""

from __future__ import annotations

import sys
from collections.abc import Callable

from churnops.settings import get_settings
from ops.services import heartbeat_path, repeat
from simulators import http_sim, kinesis_sim


def _simulator(target: Callable[[], object]) -> None:
    """Run the simulator `target` as a service: a round every SIMULATE_INTERVAL_S, a heartbeat after each."""
    s = get_settings()
    sys.exit(repeat(target, s.simulate_interval_s, heartbeat=heartbeat_path(s)))


def simulate_http_main() -> None:
    """HTTP simulator; with SIMULATE_INTERVAL_S > 0 a long-running service that sends a round every interval."""
    _simulator(http_sim.main)


def simulate_kinesis_main() -> None:
    """Kinesis simulator; with SIMULATE_INTERVAL_S > 0 a long-running service that sends a round every interval."""
    _simulator(kinesis_sim.main)
