"""torch's own convolutions, as they were when tritonconv was first imported: what tritonconv falls
back on, records through and checks against, even while `tritonconv.patch_torch()` has routed
F.conv2d/conv1d to tritonconv. In a module of its own so every layer can read them."""

import torch.nn.functional as F

TORCH_CONV2D = F.conv2d
TORCH_CONV1D = F.conv1d
