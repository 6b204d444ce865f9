"""Pre-send moderation functions: the ``@presend`` decorator and their loader.

A ``@presend`` function is a plain ``async def`` taking the pre-send callback as an
:class:`~sink.events.Event` and returning ``None`` / ``Verdict.accept()`` (pass),
``Verdict.reject(code="...")`` (block) or ``Verdict.accept(payload={...})`` (pass a
rewritten payload)::

    from callback_sink.handlers import Event, Verdict, presend

    @presend
    async def no_spam(event: Event) -> Verdict | None:
        if "spam" in event.payload.get("msg", ""):
            return Verdict.reject(code="no spam here")
        return None

They live in the same modules as ``@on`` handlers (``SINK_HANDLERS`` and the
``callback_sink.handlers`` entry points) and run in the **ingress**, inside Easemob's wait:
keep them fast and never block the event loop. Every function of every module runs, in load
order (modules as listed, functions as defined); the first rejection wins.
"""

from __future__ import annotations

import inspect
from collections.abc import Sequence
from types import ModuleType
from typing import TypeVar, cast

from callback_sink.handlers.registry import import_modules
from callback_sink.sink.errors import HandlerLoadError
from callback_sink.sink.presend import PresendFunc, Verdict

__all__ = ["PresendFunc", "Verdict", "collect_presend", "load_presend", "presend"]

_MARK = "__callback_sink_presend__"
P = TypeVar("P", bound=PresendFunc)


def presend(func: P) -> P:
    """Mark an ``async def f(event) -> Verdict | None`` as a pre-send moderation function.

    Used bare (``@presend``, no arguments); anything but an ``async def`` fails here, at
    import time, naming it.
    """
    if not inspect.iscoroutinefunction(func):
        name = getattr(func, "__qualname__", repr(func))
        raise HandlerLoadError(
            f"@presend {name} must be an async def taking an Event (used bare: @presend)"
        )
    setattr(func, _MARK, True)
    return cast(P, func)


def collect_presend(module: ModuleType) -> list[PresendFunc]:
    """The ``@presend`` functions defined in ``module``, in definition order."""
    return [
        attr for attr in vars(module).values()
        if getattr(attr, _MARK, False) and getattr(attr, "__module__", None) == module.__name__
    ]  # fmt: skip


def load_presend(
    modules: Sequence[str | ModuleType], *, use_entry_points: bool = True
) -> tuple[PresendFunc, ...]:
    """The pre-send chain: every ``@presend`` function of the handler modules (dotted paths
    or modules, then the entry points), in load order."""
    paths = [m for m in modules if isinstance(m, str)]
    found = [m for m in modules if isinstance(m, ModuleType)]
    for module in import_modules(paths, use_entry_points=use_entry_points):
        if module not in found:
            found.append(module)
    return tuple(func for module in found for func in collect_presend(module))
