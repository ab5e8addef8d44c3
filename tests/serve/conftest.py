"""tests/serve: serve_harness.py (the fake backend, a uvicorn server in a thread or a subprocess, raw HTTP
helpers) is imported by the test modules next to it."""

import sys
from pathlib import Path

HERE = Path(__file__).resolve().parent
if str(HERE) not in sys.path:
    sys.path.insert(0, str(HERE))
