"""Fixtures of the image track: a small raw-digits folder generated once per session."""

from __future__ import annotations

import pytest


@pytest.fixture(scope="session")
def raw_contract():
    from churnops.contract import load_any_contract

    return load_any_contract("raw_digits")


@pytest.fixture(scope="session")
def raw_folder(tmp_path_factory, raw_contract):
    """The first 300 digits as DNG captures (seed 7): every class has at least 25."""
    from churnops.image.sensor import generate

    root = tmp_path_factory.mktemp("raw_digits")
    generate(root, raw_contract, seed=7, limit=300)
    return root
