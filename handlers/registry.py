"""Handler registration: the ``@on`` decorator and the loader that builds a :class:`Registry`.

``@on`` only marks a function; nothing global is mutated. The worker imports the configured
modules (``SINK_HANDLERS`` and the ``callback_sink.handlers`` entry points) and collects the
marked functions, so two workers in one process can hold different handler sets.
"""

from __future__ import annotations

import importlib
import inspect
import os
import sys
from collections.abc import Awaitable, Callable, Iterable, Sequence
from dataclasses import dataclass, field
from importlib.metadata import entry_points
from types import ModuleType
from typing import Any, Literal, TypeVar, cast, overload

from callback_sink.sink import logs, names
from callback_sink.sink.errors import HandlerLoadError, StartupError
from callback_sink.sink.events import Event

HandlerFunc = Callable[[Event], Awaitable[None]]
F = TypeVar("F", bound=HandlerFunc)
#: ``@on(..., transactional=True)``: ``async def h(event, tx)`` (``tx``: a
#: :data:`~callback_sink.handlers.transactional.Transaction`).
TF = TypeVar("TF", bound=Callable[[Event, Any], Awaitable[None]])

ENTRY_POINT_GROUP = "callback_sink.handlers"
_MARK = "__callback_sink_subscriptions__"
_OPTIONS_MARK = "__callback_sink_options__"
_NAME_MARK = "__callback_sink_name__"
#: The built-in handler modules' dotted paths before they moved under ``callback_sink``;
#: still accepted in ``SINK_HANDLERS`` (with a warning) when no such module is importable.
RENAMED_MODULES = {
    "handlers.log": "callback_sink.handlers.log",
    "handlers.directory": "callback_sink.handlers.directory",
}
_STARTUP_MARK = "__callback_sink_on_startup__"
_SHUTDOWN_MARK = "__callback_sink_on_shutdown__"

Hook = Callable[[], Awaitable[None]]
H = TypeVar("H", bound=Hook)

log = logs.get("handlers")


@dataclass(frozen=True)
class Options:
    """Per-handler overrides of the worker-wide settings; ``None`` means "the worker's"."""

    #: Seconds before the handler is cancelled and retried (``SINK_HANDLER_TIMEOUT``).
    timeout: float | None = None
    #: Attempts before the callback is dead-lettered for this handler (``SINK_MAX_ATTEMPTS``).
    retries: int | None = None
    #: Exception types that dead-letter at once, without retrying (like ``PermanentError``).
    give_up_on: tuple[type[BaseException], ...] = ()
    #: Most callbacks this handler runs at once in one worker (``SINK_CONCURRENCY``).
    concurrency: int | None = None
    #: Run in a PostgreSQL transaction (``SINK_INBOX_URL``) that also holds its done mark.
    transactional: bool = False


@overload
def on(
    *subscriptions: str, timeout: float | None = None, retries: int | None = None,
    give_up_on: Iterable[type[BaseException]] = (), concurrency: int | None = None,
    name: str | None = None, transactional: Literal[False] = False,
) -> Callable[[F], F]: ...  # fmt: skip
@overload
def on(
    *subscriptions: str, timeout: float | None = None, retries: int | None = None,
    give_up_on: Iterable[type[BaseException]] = (), concurrency: int | None = None,
    name: str | None = None, transactional: Literal[True],
) -> Callable[[TF], TF]: ...  # fmt: skip
def on(
    *subscriptions: str,
    timeout: float | None = None,
    retries: int | None = None,
    give_up_on: Iterable[type[BaseException]] = (),
    concurrency: int | None = None,
    name: str | None = None,
    transactional: bool = False,
) -> Callable[[Any], Any]:
    """Subscribe an ``async def handler(event)`` to event names, families or ``*``.

    ``timeout``, ``retries`` (attempts in all, the first included), ``give_up_on``
    (exception types never worth a retry) and ``concurrency`` override the worker-wide
    settings for this handler alone. ``name`` is the handler's stable identity in dedup
    marks, dead letters, metrics and logs; without it the identity is ``module.function``,
    so moving or renaming the function makes the new one a different handler (callbacks
    redelivered after the rename run again under the new name). ``transactional=True``
    makes it ``async def handler(event, tx)``: ``tx`` is a transaction on ``SINK_INBOX_URL``
    that commits the handler's writes together with its done mark, so a crash can neither
    lose them nor apply them twice (docs/howto/transactional-handlers.md). A name nobody
    knows, or a bad option, fails here, at import time, with a message naming it.
    """
    if not subscriptions:
        raise HandlerLoadError("@on() needs at least one event name")
    for subscription in subscriptions:
        if not names.is_subscribable(subscription):
            raise HandlerLoadError(
                f"@on({subscription!r}): unknown event name (see docs/reference/events.md)"
            )
    if timeout is not None and timeout <= 0:
        raise HandlerLoadError(f"@on(timeout={timeout!r}): must be a positive number of seconds")
    for option, value in (("retries", retries), ("concurrency", concurrency)):
        if value is not None and (not isinstance(value, int) or value < 1):
            raise HandlerLoadError(f"@on({option}={value!r}): must be an integer of at least 1")
    errors = tuple(give_up_on)
    for error in errors:
        if not (isinstance(error, type) and issubclass(error, BaseException)):
            raise HandlerLoadError(f"@on(give_up_on=...): {error!r} is not an exception type")
    if name is not None and (not isinstance(name, str) or not _valid_name(name)):
        raise HandlerLoadError(
            f"@on(name={name!r}): must be a non-empty string without spaces or commas"
        )
    options = Options(timeout, retries, errors, concurrency, bool(transactional))

    def mark(func: F) -> F:
        if not inspect.iscoroutinefunction(func):
            raise HandlerLoadError(f"@on handler {func.__qualname__} must be an async def")
        if transactional and len(inspect.signature(func).parameters) < 2:
            raise HandlerLoadError(
                f"@on(transactional=True) handler {func.__qualname__} must take (event, tx)"
            )
        existing: tuple[str, ...] = getattr(func, _MARK, ())
        setattr(func, _MARK, tuple(dict.fromkeys((*existing, *subscriptions))))
        setattr(func, _OPTIONS_MARK, options)
        if name is not None:
            setattr(func, _NAME_MARK, name)
        return cast(F, func)

    return mark


def on_startup(func: H) -> H:
    """Mark an ``async def open() -> None`` of a handler module to be awaited, in
    registration order, before the worker takes its first message: open pools, check
    settings. An exception stops the worker at once with a one-line error."""
    if not inspect.iscoroutinefunction(func):
        raise HandlerLoadError(f"@on_startup hook {func.__qualname__} must be an async def")
    setattr(func, _STARTUP_MARK, True)
    return cast(H, func)


def on_shutdown(func: H) -> H:
    """Mark an ``async def close() -> None`` of a handler module to be awaited when the
    worker stops (after its last handler finished): close pools, flush buffers."""
    if not inspect.iscoroutinefunction(func):
        raise HandlerLoadError(f"@on_shutdown hook {func.__qualname__} must be an async def")
    setattr(func, _SHUTDOWN_MARK, True)
    return cast(H, func)


@dataclass(frozen=True)
class Handler:
    """A registered handler; ``name`` (``@on(name=...)``, else module.function) is its
    identity in dedup marks, dead letters, metrics and logs."""

    name: str
    func: HandlerFunc = field(compare=False)
    subscriptions: tuple[str, ...]
    options: Options = field(default=Options(), compare=False)

    def wants(self, event_name: str) -> bool:
        return any(names.matches(sub, event_name) for sub in self.subscriptions)


class Registry:
    """The handlers of one worker, looked up by event name."""

    def __init__(
        self,
        handlers: Iterable[Handler],
        shutdown_hooks: Iterable[Hook] = (),
        startup_hooks: Iterable[Hook] = (),
    ) -> None:
        self.handlers: tuple[Handler, ...] = tuple(handlers)
        seen: dict[str, Handler] = {}
        for handler in self.handlers:
            if handler.name in seen:
                raise HandlerLoadError(
                    f"two handlers share the name {handler.name!r} "
                    f"({_where(seen[handler.name])} and {_where(handler)}): "
                    "give each a distinct @on(name=...)"
                )
            seen[handler.name] = handler
        self.startup_hooks: tuple[Hook, ...] = tuple(startup_hooks)
        self.shutdown_hooks: tuple[Hook, ...] = tuple(shutdown_hooks)
        self._by_name: dict[str, tuple[Handler, ...]] = {}

    def for_event(self, event_name: str) -> tuple[Handler, ...]:
        """Every handler subscribed to ``event_name``, in load order."""
        found = self._by_name.get(event_name)
        if found is None:
            found = tuple(h for h in self.handlers if h.wants(event_name))
            self._by_name[event_name] = found
        return found

    def __len__(self) -> int:
        return len(self.handlers)

    async def startup(self) -> None:
        """Await every ``@on_startup`` hook in registration order; the first that fails
        raises :class:`StartupError` naming it (the worker must not consume)."""
        for hook in self.startup_hooks:
            try:
                await hook()
            except Exception as exc:
                name = f"{hook.__module__}.{hook.__qualname__}"
                raise StartupError(f"start-up hook {name} failed: {exc}") from exc

    async def shutdown(self) -> None:
        """Await every module's ``@on_shutdown`` hook; one failing does not stop the rest."""
        for hook in self.shutdown_hooks:
            try:
                await hook()
            except Exception as exc:
                log.error("handlers.shutdown_failed", hook=hook.__qualname__, error=str(exc))


def collect(module: ModuleType) -> list[Handler]:
    """The ``@on``-marked functions defined in ``module``."""
    found = []
    for attr in vars(module).values():
        subscriptions = getattr(attr, _MARK, None)
        if subscriptions and getattr(attr, "__module__", None) == module.__name__:
            name = getattr(attr, _NAME_MARK, None) or f"{module.__name__}.{attr.__qualname__}"
            found.append(Handler(name, attr, subscriptions, getattr(attr, _OPTIONS_MARK)))
    return found


def load(modules: Sequence[str], *, use_entry_points: bool = True) -> Registry:
    """Import handler modules by dotted path (and from entry points) into a registry.

    A module that cannot be imported fails start-up with a message naming it.
    """
    found = import_modules(modules, use_entry_points=use_entry_points)
    handlers: list[Handler] = []
    for module in found:
        handlers.extend(collect(module))
    return Registry(handlers, _hooks(found, _SHUTDOWN_MARK), _hooks(found, _STARTUP_MARK))


def _import_here(path: str) -> ModuleType:
    """Import ``path``; a package in the working directory is found too, as ``python -m``
    would find it: a console script (``make run``, ``callback-sink worker``) does not have
    the working directory on ``sys.path``, so ``myapp.callbacks`` next to it would not be."""
    try:
        return importlib.import_module(path)
    except ModuleNotFoundError as exc:
        top, here = path.split(".")[0], os.getcwd()
        local = os.path.isdir(os.path.join(here, top)) or os.path.isfile(f"{here}/{top}.py")
        if exc.name != top or not local or here in sys.path or path in RENAMED_MODULES:
            raise
        sys.path.insert(0, here)
        return importlib.import_module(path)


def import_modules(modules: Sequence[str], *, use_entry_points: bool = True) -> list[ModuleType]:
    """The handler modules named by dotted path, then those of the entry points, each once,
    in that order (``@on`` handlers and ``@presend`` functions are collected from them)."""
    loaded: dict[str, ModuleType] = {}
    for path in modules:
        try:
            loaded[path] = _import_here(path)
        except HandlerLoadError:
            raise
        except ModuleNotFoundError as exc:
            if path not in RENAMED_MODULES or exc.name not in (path, path.split(".")[0]):
                raise HandlerLoadError(
                    f"SINK_HANDLERS: cannot import handler module {path!r}: {exc}"
                ) from exc
            new = RENAMED_MODULES[path]
            log.warning("handlers.module_renamed", module=path, use=new)
            loaded[new] = importlib.import_module(new)
        except Exception as exc:
            raise HandlerLoadError(
                f"SINK_HANDLERS: cannot import handler module {path!r}: {exc}"
            ) from exc
    if use_entry_points:
        for ep in entry_points(group=ENTRY_POINT_GROUP):
            try:
                target = ep.load()
            except HandlerLoadError:
                raise
            except Exception as exc:
                raise HandlerLoadError(
                    f"entry point {ep.name!r} ({ep.value}) in {ENTRY_POINT_GROUP}: {exc}"
                ) from exc
            module = target if isinstance(target, ModuleType) else inspect.getmodule(target)
            if module is not None:
                loaded.setdefault(module.__name__, module)
    return list(loaded.values())


def _valid_name(name: str) -> bool:
    return bool(name) and not any(c.isspace() or c == "," for c in name)


def _where(handler: Handler) -> str:
    return f"{handler.func.__module__}.{handler.func.__qualname__}"


def _hooks(modules: Iterable[ModuleType], mark: str) -> list[Hook]:
    return [
        attr for module in modules for attr in vars(module).values()
        if getattr(attr, mark, False) and attr.__module__ == module.__name__
    ]  # fmt: skip
