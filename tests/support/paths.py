"""Where the project and its data are, and whether the churn tests read the real BankChurners file."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
REAL_DATA = ROOT.parent / "shared" / "data" / "bank_churners.csv"


def synthetic_data_forced() -> bool:
    """CHURNOPS_TEST_DATA=synthetic: run as a hosted runner does, on the generator, even where the file is."""
    return os.environ.get("CHURNOPS_TEST_DATA", "").lower() == "synthetic"


def uses_real_file() -> bool:
    """Whether the churn tests read the real BankChurners file (else the seeded synthetic generator)."""
    return REAL_DATA.exists() and not synthetic_data_forced()


real_file_only = pytest.mark.skipif(
    not uses_real_file(), reason="checks facts of the real BankChurners file (hand-copied rows, its row count)"
)
