import pytest
import torch


@pytest.fixture(autouse=True)
def _float64():
    """Physics tests compare to closed forms at 1e-6: compute in float64."""
    old = torch.get_default_dtype()
    torch.set_default_dtype(torch.float64)
    yield
    torch.set_default_dtype(old)
