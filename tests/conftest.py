"""Test-session settings shared by every test file."""

import torch

# The tiny models here gain nothing from intra-op threads; on a shared 2-core machine extra threads
# only contend (a 20-step sweep took ~15x longer with the default thread count).
torch.set_num_threads(1)
