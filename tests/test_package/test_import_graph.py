"""The import graph of eva_mm has no cycle, and eva_mm.checkpoints sits above
eva_mm.models: checkpoints import the models, never the other way round.

The graph is read from the source (the AST of every module), with the
imports inside functions counted: a deferred import still ties the two
modules together. Importing ``a.b.c`` also runs the ``__init__`` of ``a``
and ``a.b``, so those are edges too, except for the packages the importing
module is itself inside (Python has started them already).
"""
import ast
from pathlib import Path
from typing import Dict, List, Set

ROOT = Path(__file__).resolve().parents[2]

Graph = Dict[str, Set[str]]


def _modules(root: Path, package: str) -> Dict[str, Path]:
    """Every module of ``package`` under ``root``, by dotted name."""
    modules = {}
    for path in sorted((root / package).rglob('*.py')):
        parts = list(path.relative_to(root).with_suffix('').parts)
        if parts[-1] == '__init__':
            parts.pop()
        modules['.'.join(parts)] = path
    return modules


def _targets(node: ast.AST, module: str, is_package: bool,
             modules: Dict[str, Path]) -> List[str]:
    """The modules an import statement names (submodules resolved)."""
    if isinstance(node, ast.Import):
        return [alias.name for alias in node.names]
    base = module.split('.') if is_package else module.split('.')[:-1]
    if node.level:
        base = base[:len(base) - node.level + 1]
        name = '.'.join(base + ([node.module] if node.module else []))
    else:
        name = node.module
    # ``from pkg import sub`` imports the module pkg.sub.
    return [
        f'{name}.{alias.name}' if f'{name}.{alias.name}' in modules else name
        for alias in node.names
    ]


def import_graph(root: Path, package: str) -> Graph:
    """Module -> the modules of ``package`` that importing it runs.

    Args:
        root: The folder that holds the package.
        package: The top-level package name.

    Returns:
        The edges, by dotted module name (packages by their own name).
    """
    modules = _modules(root, package)
    graph: Graph = {name: set() for name in modules}
    for name, path in modules.items():
        is_package = path.name == '__init__.py'
        parts = name.split('.')
        running = {'.'.join(parts[:i]) for i in range(1, len(parts) + 1)}
        for node in ast.walk(ast.parse(path.read_text())):
            if not isinstance(node, (ast.Import, ast.ImportFrom)):
                continue
            for target in _targets(node, name, is_package, modules):
                pieces = target.split('.')
                for i in range(1, len(pieces) + 1):
                    step = '.'.join(pieces[:i])
                    if step in modules and step not in running:
                        graph[name].add(step)
    return graph


def subpackage_graph(graph: Graph, package: str) -> Graph:
    """The edges between the top-level subpackages (and modules)."""

    def top(name: str) -> str:
        return '.'.join(name.split('.')[:2]) if name != package else name

    collapsed: Graph = {}
    for source, targets in graph.items():
        for target in targets:
            if top(source) != top(target):
                collapsed.setdefault(top(source), set()).add(top(target))
    return collapsed


def find_cycles(graph: Graph) -> List[List[str]]:
    """One cycle through each back edge of a depth-first walk, as paths
    ``[a, b, ..., a]``; empty when the graph is acyclic."""
    state: Dict[str, int] = {}
    stack: List[str] = []
    cycles = []

    def visit(node: str) -> None:
        state[node] = 1
        stack.append(node)
        for target in sorted(graph.get(node, ())):
            if state.get(target) == 1:
                cycles.append(stack[stack.index(target):] + [target])
            elif target not in state:
                visit(target)
        stack.pop()
        state[node] = 2

    for node in sorted(graph):
        if node not in state:
            visit(node)
    return cycles


def _report(cycles: List[List[str]]) -> str:
    return '\n'.join(' -> '.join(cycle) for cycle in cycles)


def test_eva_mm_has_no_import_cycle() -> None:
    graph = import_graph(ROOT, 'eva_mm')
    cycles = find_cycles(graph)
    assert not cycles, 'import cycles between modules:\n' + _report(cycles)
    packages = subpackage_graph(graph, 'eva_mm')
    cycles = find_cycles(packages)
    assert not cycles, ('import cycles between subpackages:\n' +
                        _report(cycles))


def test_checkpoints_import_models_never_the_reverse() -> None:
    packages = subpackage_graph(import_graph(ROOT, 'eva_mm'), 'eva_mm')
    assert 'eva_mm.models' in packages['eva_mm.checkpoints']
    assert 'eva_mm.checkpoints' not in packages['eva_mm.models']


def test_cycles_are_found_and_named(tmp_path: Path) -> None:
    """The walk sees a cycle closed by an import inside a function, and
    one closed through a package's ``__init__``."""
    package = tmp_path / 'pkg'
    (package / 'sub').mkdir(parents=True)
    (package / '__init__.py').write_text('')
    (package / 'a.py').write_text('from . import b\n')
    (package / 'b.py').write_text(
        'def load():\n    from .a import thing\n    return thing\n')
    (package / 'sub' / '__init__.py').write_text('from .c import C\n')
    (package / 'sub' / 'c.py').write_text('from ..d import D\nC = 1\n')
    (package / 'd.py').write_text('from pkg.sub.e import E\nD = 1\n')
    (package / 'sub' / 'e.py').write_text('E = 1\n')
    cycles = _report(find_cycles(import_graph(tmp_path, 'pkg')))
    assert 'pkg.a -> pkg.b -> pkg.a' in cycles
    # d imports pkg.sub.e, which runs pkg.sub's __init__, which imports c,
    # which imports d.
    assert 'pkg.d -> pkg.sub -> pkg.sub.c -> pkg.d' in cycles
    # e itself imports nothing: no cycle through it.
    assert 'pkg.sub.e ->' not in cycles
