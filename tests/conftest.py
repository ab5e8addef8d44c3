"""Test helpers shared by every folder: tone_corpus and accelerate_worker live next to this file."""

import sys
from pathlib import Path

TESTS = Path(__file__).resolve().parent
if str(TESTS) not in sys.path:
    sys.path.insert(0, str(TESTS))
