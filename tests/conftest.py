import os

import torch

# Tests use tiny models, where thread start-up costs more than it saves; one thread also keeps
# results bit-for-bit repeatable.
torch.set_num_threads(1)
os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("HF_DATASETS_OFFLINE", "1")
