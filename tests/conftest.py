import os
import sys
from pathlib import Path

import pytest
import torch

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
# One thread: the suite's numbers do not depend on how many cores the machine has, and the
# browser tests' Streamlit server is not starved by the test process.
torch.set_num_threads(1)
os.environ.setdefault("BNVIZ_DATA_DIR", str(ROOT / "tests" / "artifacts" / "no-mnist-here"))


@pytest.fixture
def tiny_config():
    """A config that trains in well under a second."""
    from bnviz.config import Config
    return Config(steps=60, width=32, depth=2, record_every=10, eval_every=20)
