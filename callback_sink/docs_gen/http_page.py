"""``docs/reference/http.md``: the HTTP endpoints of the ingress and the worker, with their
answers, from the one declaration :data:`callback_sink.sink.endpoints.ENDPOINTS`."""

from __future__ import annotations

from callback_sink.docs_gen.markdown import HEADER, cell
from callback_sink.sink.endpoints import ENDPOINTS

SERVERS = {
    "ingress": (
        "The ingress",
        "Listens on `SINK_HOST`:`SINK_PORT` (127.0.0.1:8080 by default). Every path of the "
        "port answers only clients in `SINK_ALLOWED_NETWORKS` and trusted proxies.",
    ),
    "worker": (
        "The worker",
        "Listens on `SINK_WORKER_HOST`:`SINK_WORKER_PORT` (127.0.0.1:8081; port 0: no "
        "server). Easemob never reaches it: keep it inside your network.",
    ),
}


def markdown() -> str:
    out = ["# HTTP endpoints", "", HEADER]
    for server, (title, intro) in SERVERS.items():
        out += ["", f"## {title}", "", intro]
        for endpoint in (e for e in ENDPOINTS if e.server == server):
            moved = f" (`{endpoint.setting}`)" if endpoint.setting else ""
            out += [
                "",
                f"### `{endpoint.method} {endpoint.path}`{moved}",
                "",
                endpoint.summary,
                "",
                "| status | when |",
                "|---|---|",
                *(f"| {status} | {cell(when)} |" for status, when in endpoint.statuses),
            ]
    return "\n".join(out) + "\n"
