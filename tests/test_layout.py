"""The package layout of DESIGN.md as checks: short functions, no prefix-named modules, imports at the top.

The import layers themselves are checked by ``lint-imports`` (``[tool.importlinter]`` in pyproject.toml),
which ``make test`` runs before pytest.
"""

import ast
from pathlib import Path

import pytest

PACKAGE = Path(__file__).resolve().parents[1] / "speechtl"
MODULES = sorted(PACKAGE.rglob("*.py"))
MAX_FUNCTION_LINES = 80


def _tree(path: Path) -> ast.Module:
    return ast.parse(path.read_text(encoding="utf-8"), filename=str(path))


def test_the_package_has_modules():
    assert len(MODULES) > 40 and (PACKAGE / "train" / "loop.py").is_file()


@pytest.mark.parametrize("path", MODULES, ids=lambda p: str(p.relative_to(PACKAGE)))
def test_functions_are_short(path):
    long = [f"{node.name} ({node.end_lineno - node.lineno + 1} lines)" for node in ast.walk(_tree(path))
            if isinstance(node, ast.FunctionDef | ast.AsyncFunctionDef)
            and node.end_lineno - node.lineno + 1 > MAX_FUNCTION_LINES]
    assert not long, f"{path}: over {MAX_FUNCTION_LINES} lines: {', '.join(long)}"


# heavy or optional (an extra of pyproject.toml): the only imports a function may make itself
HEAVY_OPTIONAL = {"torch", "transformers", "accelerate", "peft", "safetensors", "tokenizers", "huggingface_hub",
                  "datasets", "ctranslate2", "faster_whisper", "onnxruntime", "flashlight", "fastapi", "starlette",
                  "uvicorn", "python_multipart", "matplotlib"}


@pytest.mark.parametrize("path", MODULES, ids=lambda p: str(p.relative_to(PACKAGE)))
def test_imports_inside_functions_are_heavy_optional_dependencies(path):
    """speechtl modules, the standard library and the core dependencies are imported at module level."""
    inner = []
    for node in ast.walk(_tree(path)):
        if isinstance(node, ast.FunctionDef | ast.AsyncFunctionDef):
            for child in ast.walk(node):
                if isinstance(child, ast.ImportFrom):
                    names = [child.module or ""] if not child.level else ["<relative>"]
                elif isinstance(child, ast.Import):
                    names = [a.name for a in child.names]
                else:
                    continue
                inner += [f"line {child.lineno}: {n}" for n in names if n.split(".")[0] not in HEAVY_OPTIONAL]
    assert not inner, f"{path}: imported inside a function: {sorted(set(inner))}"


def test_no_module_is_named_by_a_prefix_of_another():
    folders = {p.parent for p in MODULES}
    clashes = []
    for folder in folders:
        names = sorted(p.stem for p in folder.iterdir() if (p.suffix == ".py" or (p / "__init__.py").is_file())
                       and p.stem != "__init__")
        clashes += [f"{folder.relative_to(PACKAGE.parent)}: {a} / {b}" for a in names for b in names
                    if a != b and b.startswith(a + "_")]
    assert not clashes, clashes


def test_the_public_face_resolves_every_name():
    import speechtl

    for name in speechtl.__all__:
        assert getattr(speechtl, name) is not None, name
    with pytest.raises(AttributeError):
        speechtl.no_such_name  # noqa: B018
