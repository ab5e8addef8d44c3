"""The README's voice-agent snippets are the files in examples/, verbatim (`make test`; no client needed).

`make integration` runs those files with the real clients (test_pipecat.py, test_livekit.py), so a snippet that
stops working fails there, and a README that drifts from the files fails here.
"""

from __future__ import annotations

import re
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
EXAMPLES = sorted((ROOT / "examples").glob("*.py"))
_FENCED = re.compile(r"^```python\n(.*?)^```$", re.MULTILINE | re.DOTALL)
_NAMED = re.compile(r"# (examples/[\w.-]+\.py)\b")  # the first line of an example names its file


def example_blocks(markdown: str) -> dict[str, str]:
    """The fenced python blocks of ``markdown`` whose first line names an examples/ file, by that name."""
    blocks = {}
    for block in _FENCED.findall(markdown):
        named = _NAMED.match(block)
        if named:
            assert named.group(1) not in blocks, f"README shows {named.group(1)} twice"
            blocks[named.group(1)] = block
    return blocks


@pytest.fixture(scope="module")
def readme_blocks() -> dict[str, str]:
    return example_blocks((ROOT / "README.md").read_text(encoding="utf-8"))


def test_examples_exist_and_name_themselves():
    assert {p.name for p in EXAMPLES} >= {"pipecat_stt.py", "pipecat_whisper.py", "livekit_stt.py"}
    for path in EXAMPLES:
        assert _NAMED.match(path.read_text(encoding="utf-8")).group(1) == f"examples/{path.name}"


@pytest.mark.parametrize("path", EXAMPLES, ids=lambda p: p.name)
def test_readme_shows_the_example_verbatim(readme_blocks, path):
    name = f"examples/{path.name}"
    assert name in readme_blocks, f"README.md has no python block starting '# {name}'"
    assert readme_blocks[name] == path.read_text(encoding="utf-8"), f"README.md's block differs from {name}"


def test_readme_shows_no_other_example(readme_blocks):
    assert set(readme_blocks) <= {f"examples/{p.name}" for p in EXAMPLES}
