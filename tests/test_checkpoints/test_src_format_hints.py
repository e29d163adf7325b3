"""Error hints name source formats through the registry, never as typed
text, so that every format an error suggests exists."""
import ast
import re
from pathlib import Path

import pytest

from eva_mm.checkpoints.converters import SRC_FORMATS
from eva_mm.checkpoints.registry import src_format_hint

PACKAGE = Path(__file__).resolve().parents[2] / 'eva_mm'


def _docstrings(tree: ast.AST) -> set:
    nodes = (ast.Module, ast.ClassDef, ast.FunctionDef, ast.AsyncFunctionDef)
    return {
        id(node.body[0].value)
        for node in ast.walk(tree) if isinstance(node, nodes) and node.body
        and isinstance(node.body[0], ast.Expr)
        and isinstance(node.body[0].value, ast.Constant)
    }


def test_every_hint_names_registered_formats() -> None:
    named = []
    for path in PACKAGE.rglob('*.py'):
        for node in ast.walk(ast.parse(path.read_text())):
            if isinstance(node, ast.Call) and getattr(
                    node.func, 'id', None) == 'src_format_hint':
                # A name passed on (the format being converted) is checked
                # where it is called from.
                named += [(path.name, arg.value) for arg in node.args
                          if isinstance(arg, ast.Constant)]
    assert len(named) >= 20
    assert {name for _, name in named} <= set(SRC_FORMATS), named
    # Every format but the video one is suggested somewhere.
    assert set(SRC_FORMATS) - {name for _, name in named} == {
        'official-video'}


def test_no_format_is_typed_into_a_message() -> None:
    typed = re.compile(r"--src-format '?[a-z]")
    found = []
    for path in PACKAGE.rglob('*.py'):
        tree = ast.parse(path.read_text())
        docstrings = _docstrings(tree)
        found += [
            f'{path.name}:{node.lineno}' for node in ast.walk(tree)
            if isinstance(node, ast.Constant) and isinstance(node.value, str)
            and id(node) not in docstrings and typed.search(node.value)
        ]
    assert not found, found


def test_hint_text() -> None:
    assert src_format_hint('official-det') == '--src-format official-det'
    assert src_format_hint('official', 'timm') == \
        "--src-format 'official' or 'timm'"
    assert src_format_hint('official-eva02', 'official-det', 'timm') == \
        "--src-format 'official-eva02', 'official-det' or 'timm'"
    with pytest.raises(KeyError, match="'offical'"):
        src_format_hint('offical')
    with pytest.raises(KeyError):
        src_format_hint()
