"""Shared fixtures (helpers live in helpers.py: a second conftest.py under tests/claims would shadow this one)."""

import pytest
import torch
from helpers import PROBLEMS, make_problem


@pytest.fixture(params=PROBLEMS)
def problem64(request):
    return make_problem(request.param, torch.float64)
