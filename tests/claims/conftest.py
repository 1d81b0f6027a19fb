"""Claim tests read what the smoke DAG produced (`make smoke`, i.e. `snakemake all --config profile=smoke`)."""

import json
from pathlib import Path

import pytest

FIGURES = Path(__file__).resolve().parents[2] / "figures" / "smoke"


def pytest_collection_modifyitems(items):
    for item in items:
        if Path(item.fspath).parent == Path(__file__).parent:
            item.add_marker(pytest.mark.claims)


@pytest.fixture(scope="session")
def load_summary():
    """figure name → the JSON summary its notebook wrote for the smoke profile."""

    def load(figure: str) -> dict:
        path = FIGURES / f"{figure}.json"
        if not path.exists():
            pytest.fail(f"{path} is missing: run the smoke pipeline first (make smoke)")
        return json.loads(path.read_text())

    return load
