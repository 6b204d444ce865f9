"""Regenerate sink/examples.json from the specification's Markdown files.

Run from the repository root: ``python tools/extract_examples.py tests/spec`` (the
repository's copy of the specification).
The examples ship with the package so that ``callback-sink send`` works anywhere.

The spec reuses placeholder callIds (``XXXX#XXXX_XXXX`` for 18 examples, one real-looking id
for four different operations). A sink treats one callId as one callback: sent as printed,
the second example with a callId would be a duplicate, or, being another kind of callback,
a forgery (``callback.forged``). So every repeat of a callId gets the suffix ``-<n>``, ``n``
its position in the file; the appkey (everything before the callId's last ``_``) is kept.
"""

from __future__ import annotations

import json
import re
import sys
from pathlib import Path
from typing import Any

BLOCK = re.compile(r"```json\n(.*?)```", re.S)


def extract(spec: Path) -> list[dict[str, Any]]:
    """Every JSON example of the spec, in document order, each with a callId of its own."""
    examples: list[dict[str, Any]] = []
    for name in ("muc-callbacks.zh.md", "PROTOCOL.md"):
        text = (spec / name).read_text(encoding="utf-8")
        for index, block in enumerate(BLOCK.findall(text)):
            examples.append({"source": f"{name}#{index}", "body": json.loads(block)})
    seen: set[str] = set()
    for position, example in enumerate(examples):
        body = example["body"]
        if body["callId"] in seen:
            body["callId"] = f"{body['callId']}-{position}"
        seen.add(body["callId"])
    return examples


def main(spec_dir: str) -> None:
    examples = extract(Path(spec_dir))
    out = Path(__file__).resolve().parent.parent / "sink" / "examples.json"
    out.write_text(json.dumps(examples, ensure_ascii=False, indent=1) + "\n", encoding="utf-8")
    print(f"wrote {len(examples)} examples to {out}")


if __name__ == "__main__":
    main(sys.argv[1] if len(sys.argv) > 1 else "tests/spec")
