import pytest


@pytest.fixture(autouse=True, scope="module")
def _one_thread(one_thread):
    """Every method test uses tiny models (see ``one_thread`` in tests/conftest.py)."""
