"""Regenerate sink/examples.json from the specification's Markdown files.

Run from the repository root: ``python tools/extract_examples.py ../shared/spec``.
The examples ship with the package so that ``callback-sink send`` works anywhere.
"""

from __future__ import annotations

import json
import re
import sys
from pathlib import Path

BLOCK = re.compile(r"```json\n(.*?)```", re.S)


def main(spec_dir: str) -> None:
    spec = Path(spec_dir)
    examples: list[dict[str, object]] = []
    for name in ("muc-callbacks.zh.md", "PROTOCOL.md"):
        text = (spec / name).read_text(encoding="utf-8")
        for index, block in enumerate(BLOCK.findall(text)):
            examples.append({"source": f"{name}#{index}", "body": json.loads(block)})
    out = Path(__file__).resolve().parent.parent / "sink" / "examples.json"
    out.write_text(json.dumps(examples, ensure_ascii=False, indent=1) + "\n", encoding="utf-8")
    print(f"wrote {len(examples)} examples to {out}")


if __name__ == "__main__":
    main(sys.argv[1] if len(sys.argv) > 1 else "../shared/spec")
