"""Shared test set-up: makes tests/ importable (for the helpers shared by
several test folders), gives each test its own registry scope, and serves
files over HTTP on 127.0.0.1 (``file_server``)."""
from typing import Iterator

import pytest
from mmengine.registry import DefaultScope

from file_server import FileServer


@pytest.fixture(autouse=True)
def registry_scope(request: pytest.FixtureRequest) -> Iterator[None]:
    """Runs a ``registry_scope('mmdet')``-marked test in that default scope.

    mmengine keeps every ``DefaultScope`` ever created (by
    ``init_default_scope`` or a ``Runner``) and the newest one decides where
    unscoped type names are looked up, so a scope left behind by one test
    would change what the next one builds. ``overwrite_default_scope``
    restores the scopes present before the test when it exits.
    Unmarked tests run as they are.
    """
    marker = request.node.get_closest_marker('registry_scope')
    if marker is None:
        yield
        return
    with DefaultScope.overwrite_default_scope(marker.args[0]):
        yield


@pytest.fixture
def file_server() -> Iterator[FileServer]:
    """A :class:`~file_server.FileServer` on 127.0.0.1 for this test: the
    stand-in for the Hugging Face hub (no internet needed)."""
    server = FileServer()
    yield server
    server.close()
