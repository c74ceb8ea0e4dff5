"""One verifier pool for the synth tests."""

import pytest

from tsp_jax.verify import VerifierPool


@pytest.fixture(scope="session")
def pool():
  with VerifierPool(num_workers=2) as p:
    yield p
