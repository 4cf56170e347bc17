"""The public surface is listed once per package, and every listed name exists."""

from __future__ import annotations

import importlib

import pytest

import dacstyle

PACKAGES = [
    "dacstyle",
    "dacstyle.agents",
    "dacstyle.benchmarks",
    "dacstyle.competitions",
    "dacstyle.errors",
    "dacstyle.images",
    "dacstyle.llm",
    "dacstyle.runtimes",
    "dacstyle.container.client",
    "dacstyle.container.server",
]


@pytest.mark.parametrize("name", PACKAGES)
def test_every_exported_name_resolves(name):
    module = importlib.import_module(name)
    assert module.__all__, f"{name} lists no public names"
    assert len(module.__all__) == len(set(module.__all__)), f"{name}.__all__ lists a name twice"
    for member in module.__all__:
        assert getattr(module, member, None) is not None, f"{name}.{member} is listed but missing"


def test_top_level_is_lazy_and_complete():
    assert set(dir(dacstyle)) >= set(dacstyle.__all__)
    assert dacstyle.RemoteRunner.__module__ == "dacstyle.container.client.runner"
    with pytest.raises(AttributeError):
        dacstyle.not_a_member  # noqa: B018


def test_every_error_is_in_the_one_tree():
    from dacstyle import errors

    for name in errors.__all__:
        cls = getattr(errors, name)
        if name == "IsolationWarning":
            assert issubclass(cls, UserWarning)
        else:
            assert issubclass(cls, errors.DacstyleError), name
