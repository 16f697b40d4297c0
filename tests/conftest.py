"""Test-session settings shared by every test file."""

from collections.abc import Iterator

import pytest
import torch

# The tiny models here gain nothing from intra-op threads; on a shared 2-core machine extra threads
# only contend (a 20-step sweep took ~15x longer with the default thread count).
torch.set_num_threads(1)


@pytest.fixture
def svg_backend() -> Iterator[None]:
    """The user's matplotlib backend is ``svg`` (not Agg, which a plotting library might switch to); restored after."""
    import matplotlib

    before = matplotlib.get_backend()
    matplotlib.use("svg")
    yield
    matplotlib.use(before)
