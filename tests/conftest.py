"""Shared fixtures (helpers live in helpers.py: a second conftest.py under tests/claims would shadow this one)."""

import pytest
import torch
from helpers import PROBLEMS, make_problem

from eoslab.config import import_jsonschema

import_jsonschema()  # before papermill (collected with the claims): its jsonschema import would build rfc3987's grammar


@pytest.fixture(params=PROBLEMS)
def problem64(request):
    return make_problem(request.param, torch.float64)


@pytest.fixture(autouse=True, scope="session")
def one_thread():
    """Tiny models: one intra-op thread is faster, and immune to oversubscribed cores (restored afterwards)."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)
