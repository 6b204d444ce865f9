"""Handlers are plain async functions found by module path or entry point; mistakes fail loudly."""

from __future__ import annotations

import sys
import textwrap
from collections.abc import Iterator
from pathlib import Path

import pytest

from callback_sink.handlers import Event, on
from callback_sink.handlers.registry import import_modules, load
from callback_sink.sink.errors import HandlerLoadError


@pytest.fixture
def module_dir(tmp_path: Path) -> Iterator[Path]:
    sys.path.insert(0, str(tmp_path))
    yield tmp_path
    sys.path.remove(str(tmp_path))
    for name in [m for m in sys.modules if m.startswith("userhandlers")]:
        del sys.modules[name]


def write(directory: Path, name: str, source: str) -> None:
    (directory / f"{name}.py").write_text(textwrap.dedent(source))


def test_a_module_path_loads_its_decorated_handlers(module_dir: Path) -> None:
    write(module_dir, "userhandlers_ok", """
        from callback_sink.handlers import Event, on

        @on("muc:apply", "muc:invite")
        async def review(event: Event) -> None: ...

        @on("roster")
        async def contacts(event: Event) -> None: ...

        async def not_a_handler(event: Event) -> None: ...
    """)  # fmt: skip
    registry = load(["userhandlers_ok"], use_entry_points=False)
    assert [h.name for h in registry.handlers] == [
        "userhandlers_ok.review",
        "userhandlers_ok.contacts",
    ]
    assert [h.name for h in registry.for_event("muc:invite")] == ["userhandlers_ok.review"]
    assert [h.name for h in registry.for_event("roster:add")] == ["userhandlers_ok.contacts"]
    assert registry.for_event("muc:kick") == ()


def test_a_module_that_cannot_be_imported_is_named_in_the_error() -> None:
    with pytest.raises(HandlerLoadError, match="userhandlers_missing"):
        load(["userhandlers_missing"], use_entry_points=False)


def test_an_unknown_event_name_fails_at_import_naming_it(module_dir: Path) -> None:
    write(module_dir, "userhandlers_typo", """
        from callback_sink.handlers import Event, on

        @on("muc:aply")
        async def review(event: Event) -> None: ...
    """)  # fmt: skip
    with pytest.raises(HandlerLoadError, match="muc:aply"):
        load(["userhandlers_typo"], use_entry_points=False)


def test_a_plain_function_cannot_be_a_handler() -> None:
    with pytest.raises(HandlerLoadError, match="async def"):

        @on("*")
        def sync(event: Event) -> None: ...  # type: ignore[type-var]


def test_handler_modules_plug_in_through_entry_points(module_dir: Path) -> None:
    write(module_dir, "userhandlers_plugin", """
        from callback_sink.handlers import Event, on

        @on("*")
        async def everything(event: Event) -> None: ...
    """)  # fmt: skip
    dist = module_dir / "userhandlers_plugin-1.0.dist-info"
    dist.mkdir()
    (dist / "METADATA").write_text(
        "Metadata-Version: 2.1\nName: userhandlers-plugin\nVersion: 1.0\n"
    )
    (dist / "entry_points.txt").write_text(
        "[callback_sink.handlers]\nplugin = userhandlers_plugin\n"
    )
    registry = load([], use_entry_points=True)
    assert "userhandlers_plugin.everything" in [h.name for h in registry.handlers]


def test_the_built_in_log_handler_takes_everything() -> None:
    registry = load(["callback_sink.handlers.log"], use_entry_points=False)
    assert [h.name for h in registry.for_event("unknown")] == ["handlers.log.log_event"]


async def test_a_modules_shutdown_hook_is_awaited_when_the_registry_shuts_down(
    module_dir: Path,
) -> None:
    write(module_dir, "userhandlers_hook", """
        from callback_sink.handlers import Event, on, on_shutdown

        closed = []

        @on("*")
        async def handle(event: Event) -> None: ...

        @on_shutdown
        async def close() -> None:
            closed.append(True)
    """)  # fmt: skip
    registry = load(["userhandlers_hook"], use_entry_points=False)
    await registry.shutdown()
    assert sys.modules["userhandlers_hook"].closed == [True]


def test_a_handler_package_in_the_working_directory_is_found_like_python_m_finds_it(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """``SINK_HANDLERS=myapp.callbacks make run`` (the README): a console script does not
    have the working directory on ``sys.path``; the package next to it is found anyway."""
    package = tmp_path / "cwdapp_3f1c"
    package.mkdir()
    (package / "__init__.py").write_text("")
    (package / "callbacks.py").write_text(
        "from callback_sink import Event, on\n\n\n"
        "@on('muc:kick')\nasync def kicked(event: Event) -> None:\n    pass\n"
    )
    monkeypatch.chdir(tmp_path)
    monkeypatch.setattr(sys, "path", [p for p in sys.path if p not in ("", str(tmp_path))])
    for name in ("cwdapp_3f1c", "cwdapp_3f1c.callbacks"):
        monkeypatch.delitem(sys.modules, name, raising=False)
    (module,) = import_modules(["cwdapp_3f1c.callbacks"], use_entry_points=False)
    assert module.__file__ == str(package / "callbacks.py")
    with pytest.raises(HandlerLoadError, match="no_such_pkg_3f1c"):
        import_modules(["no_such_pkg_3f1c.callbacks"], use_entry_points=False)
