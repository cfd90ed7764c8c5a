"""The bridge tests reuse the engine tests' program generator."""

import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).parents[1] / "engine"))
