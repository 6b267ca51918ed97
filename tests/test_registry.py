"""zennas.registry.Registry: the one registry type behind dialects, builders, counters, spaces, proxies, models."""

from __future__ import annotations

import sys

import pytest

from zennas.arch import DIALECTS
from zennas.blocks.base import BUILDERS
from zennas.counting import COUNTERS
from zennas.errors import ConfigError, UnknownDialectError
from zennas.models import MODELS
from zennas.proxies import PROXIES
from zennas.registry import Registry
from zennas.spaces import FAMILIES


def test_register_as_decorator_and_as_call_keeps_registration_order():
    registry: Registry[object] = Registry("widget")

    @registry.register("b")
    def b() -> None: ...

    entry = registry.register("a", 42)
    assert entry == 42 and registry.get("b") is b
    assert list(registry) == ["b", "a"] and registry.items() == [("b", b), ("a", 42)]
    assert registry.names() == ["a", "b"] and len(registry) == 2 and "a" in registry and "c" not in registry
    assert registry.find("c") is None


def test_duplicates_and_unknown_names_have_one_line_messages():
    registry: Registry[int] = Registry("widget", error=UnknownDialectError)
    registry.register("b", 1)
    registry.register("a", 2)
    with pytest.raises(ValueError, match=r"^widget 'a' is already registered$"):
        registry.register("a", 3)
    with pytest.raises(UnknownDialectError, match=r"^unknown widget 'zz'; choose one of: a, b$"):
        registry.get("zz")
    custom = Registry("builder", unknown="no builder for dialect {name!r}")
    with pytest.raises(ConfigError, match=r"^no builder for dialect 'x'$"):
        custom.get("x")


def test_modules_are_imported_once_on_the_first_lookup(tmp_path, monkeypatch):
    (tmp_path / "_probe_home.py").write_text(
        'from zennas.registry import Registry\nREG = Registry("widget", ("_probe_plugin",))\n'
    )
    (tmp_path / "_probe_plugin.py").write_text('from _probe_home import REG\nREG.register("from-plugin", 7)\n')
    monkeypatch.syspath_prepend(str(tmp_path))
    try:
        import _probe_home

        assert "_probe_plugin" not in sys.modules  # the home module names its plug-ins, it does not import them
        assert _probe_home.REG.get("from-plugin") == 7 and "_probe_plugin" in sys.modules
        assert list(_probe_home.REG) == ["from-plugin"]  # a second lookup imports nothing again (no duplicate)
    finally:
        sys.modules.pop("_probe_home", None)
        sys.modules.pop("_probe_plugin", None)


def test_unregister_removes_a_temporary_entry():
    registry: Registry[int] = Registry("widget")
    registry.register("tmp", 1)
    registry.unregister("tmp")
    assert "tmp" not in registry
    with pytest.raises(ConfigError):
        registry.unregister("tmp")


def test_builtin_registries_hold_every_dialect():
    dialects = set(DIALECTS.names())
    assert dialects == {"binas", "genet", "nb201", "tinynas", "zennas-v1"}
    assert set(BUILDERS.names()) == dialects and set(COUNTERS.names()) == dialects
    assert set(FAMILIES.names()) == {"binas", "genet", "nb201", "tinynas", "zennas"}
    assert {"zen", "naswot", "params"} <= set(PROXIES.names()) and "zennet-cifar10-1m" in MODELS
