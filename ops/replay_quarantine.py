"""`make replay-quarantine` (`python -m ops.replay_quarantine`): offer the quarantined records of the
prediction log (serving/quarantine.py) to the configured store again; one JSON line says what moved."""

from __future__ import annotations

import json
import sys

from churnops.cli import setup_logging
from churnops.redact import redact
from churnops.settings import get_settings
from churnops.store.factory import open_store
from serving.prediction_log import PredictionLog


def main() -> None:
    """`make replay-quarantine`: offer the quarantined records to the configured store again."""
    setup_logging()
    s = get_settings()
    store = open_store(s)
    plog = PredictionLog(
        store, s.state_path(s.spool_dir, "spool"), s.log_batch_size, journal=False, quarantine_max_bytes=1 << 62
    )
    try:
        res = plog.replay_quarantine()
    finally:
        store.close()
    print(
        json.dumps(
            {
                "quarantine": str(plog.quarantine.dir),
                "files": res.files,
                "replayed": res.replayed,
                "kept": res.kept,
                "store_error": redact(res.store_error),
            }
        )
    )
    if res.store_error:
        print(f"store unavailable ({redact(res.store_error)}): nothing more replayed; retry later", file=sys.stderr)
        sys.exit(1)


if __name__ == "__main__":
    main()
