"""What real clients send that the emulator must take, as Easemob does.

Third-party Easemob REST clients are written against the real service, which accepts a
trailing slash on every route (``POST /{org}/{app}/chatgroups/``), header names in any case,
and numbers and booleans written as strings in JSON bodies (``"maxusers": "200"``,
``"public": "true"``: its Java back end coerces them). :func:`accept_trailing_slashes` gives
each route its twin with a slash; the value checks of :mod:`easemob.emulator.checks` coerce
strings; aiohttp's headers are case-insensitive already.
"""

from __future__ import annotations

from aiohttp import web


def accept_trailing_slashes(app: web.Application) -> None:
    """Register ``path/`` beside every ``path`` already routed, with the same handler: call
    it once, after every route is added."""
    routed = {(route.method, route.resource.canonical) for route in app.router.routes()
              if route.resource is not None}  # fmt: skip
    for route in list(app.router.routes()):
        resource = route.resource
        if resource is None or resource.canonical.endswith("/"):
            continue
        twin = resource.canonical + "/"
        if (route.method, twin) not in routed and route.method != "HEAD":
            app.router.add_route(route.method, twin, route.handler)
            routed.add((route.method, twin))
