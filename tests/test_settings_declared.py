"""Every setting is declared once, and everything about it is generated from that declaration:
no code reads an undeclared SINK_ variable, every process reads only variables declared for
its kind (so its --help lists them), every number has bounds, and the committed reference
documents are exactly what the declarations generate."""

from __future__ import annotations

import ast
import re
from dataclasses import fields
from pathlib import Path
from typing import Any

import pytest

from callback_sink import docs_gen
from callback_sink.environment import SOURCES, every_variable, reference, variables
from callback_sink.sink.errors import ConfigError
from callback_sink.sink.setting import EVERY, SERVICES, setting_of
from callback_sink.sink.settings import Settings

ROOT = Path(__file__).resolve().parent.parent
#: The installed package's sources (the top-level folders are its sub-packages).
PACKAGE = ["sink", "ingress", "worker", "handlers", "easemob", "callback_sink"]
VARIABLE = re.compile(r"\bSINK_[A-Z0-9_]+")
PREFIXES = {prefix for _, prefix in SOURCES}


def package_files() -> list[Path]:
    found: list[Path] = []
    for top in PACKAGE:
        base = ROOT / top
        if top == "callback_sink":  # its own modules; the others are symlinks to the above
            found += [p for p in base.rglob("*") if p.suffix in (".py", ".tmpl")
                      and p.relative_to(base).parts[0] not in PACKAGE[:-1]]  # fmt: skip
        else:
            found += sorted(base.rglob("*.py"))
    return found


def test_code_names_only_declared_variables() -> None:
    declared = {v.name for v in every_variable()}
    undeclared = {
        f"{path.relative_to(ROOT)}: {name}"
        for path in package_files()
        for name in VARIABLE.findall(path.read_text(encoding="utf-8"))
        if name not in declared and name not in PREFIXES
    }
    assert undeclared == set()


def test_the_environment_is_read_only_through_the_declarations() -> None:
    readers = re.compile(r"os\.environ(?:\.get)?\s*[\[(]\s*[\"'](SINK_\w+)|getenv\(")
    found = {
        str(path.relative_to(ROOT))
        for path in package_files()
        if readers.search(path.read_text(encoding="utf-8"))
    }
    assert found == set()


@pytest.mark.parametrize(("cls", "prefix"), SOURCES, ids=[p for _, p in SOURCES])
def test_each_setting_is_declared_with_plain_one_line_help(cls: type, prefix: str) -> None:
    for f in fields(cls):
        declared = setting_of(f)
        assert declared.help and "\n" not in declared.help, f.name
        assert not re.search(r"``|:mod:|:class:|:func:|#:", declared.help), f.name
        assert declared.kinds and declared.kinds <= EVERY, f.name


@pytest.mark.parametrize(("cls", "prefix"), SOURCES, ids=[p for _, p in SOURCES])
def test_every_number_has_bounds_its_default_keeps(cls: type, prefix: str) -> None:
    defaults = cls()
    for f in fields(cls):
        declared = setting_of(f)
        if any(word in str(f.type) for word in ("int", "float")):
            assert declared.low is not None or declared.high is not None, f.name
        assert declared.check(getattr(defaults, f.name)) is None, f.name


def out_of_range(cls: type) -> list[tuple[Any, str, str, str]]:
    """For every bounded setting: a value above its top, or below its bottom."""
    cases = []
    for cls_, prefix in SOURCES:
        if cls_ is not cls:
            continue
        for f in fields(cls):
            declared = setting_of(f)
            if declared.high is not None:
                value = str(int(declared.high) + 1)
            elif declared.low is not None:
                value = str(int(declared.low) - 1)
            else:
                continue
            cases.append((cls, f"{prefix}{f.name.upper()}", value, declared.bounds))
    return cases


@pytest.mark.parametrize(
    ("cls", "variable", "value", "bounds"),
    [case for cls, _ in SOURCES for case in out_of_range(cls)],
    ids=lambda x: x if isinstance(x, str) else "",
)
def test_an_out_of_range_value_is_one_line_naming_the_variable_and_its_bounds(
    cls: Any, variable: str, value: str, bounds: str
) -> None:
    with pytest.raises(ConfigError) as raised:
        cls.from_env({variable: value})
    assert str(raised.value) == f"{variable}={value}: must be {bounds}"


@pytest.mark.parametrize(
    ("variable", "value", "message"),
    [
        ("SINK_PORT", "99999", "SINK_PORT=99999: must be between 1 and 65535"),
        ("SINK_PORT", "0", "SINK_PORT=0: must be between 1 and 65535"),
        ("SINK_WORKER_PORT", "-1", "SINK_WORKER_PORT=-1: must be between 0 and 65535"),
        ("SINK_HANDLER_TIMEOUT", "inf", "SINK_HANDLER_TIMEOUT=inf: must be greater than 0 "
         "and at most 86400"),
        ("SINK_HANDLER_TIMEOUT", "nan", "SINK_HANDLER_TIMEOUT=nan: must be greater than 0 "
         "and at most 86400"),
        ("SINK_RETRY_DELAYS", "1,0", "SINK_RETRY_DELAYS=1,0: must be greater than 0 and at "
         "most 604800"),
        ("SINK_DRAIN_DELAY", "-1", "SINK_DRAIN_DELAY=-1: must be between 0 and 3600"),
    ],
)  # fmt: skip
def test_range_errors_read_as_one_line(variable: str, value: str, message: str) -> None:
    with pytest.raises(ConfigError) as raised:
        Settings.from_env({variable: value})
    assert str(raised.value) == message


def test_the_values_at_the_bounds_are_accepted() -> None:
    settings = Settings.from_env({"SINK_PORT": "65535", "SINK_WORKER_PORT": "0",
                                  "SINK_DRAIN_DELAY": "0", "SINK_PREFETCH": "1"})  # fmt: skip
    assert (settings.port, settings.worker_port, settings.prefetch) == (65535, 0, 1)


# Who reads Settings where: module (and, for the command line and the service, function) →
# the process kinds it runs in. A field read there must be declared for those kinds, so the
# help of every command running as that kind lists it.
MODULE_KINDS: dict[str, frozenset[str]] = {
    "ingress": frozenset({"ingress"}),
    "worker": frozenset({"worker"}),
    "sink/topology.py": SERVICES,
    "callback_sink/backfill.py": frozenset({"backfill"}),
    "callback_sink/dlq_cli.py": frozenset({"dlq"}),
}
FUNCTION_KINDS: dict[str, dict[str, frozenset[str]]] = {
    "callback_sink/service.py": {
        "run_ingress": frozenset({"ingress"}),
        "run_ingress_child": frozenset({"ingress"}),
        "serve_ingress": frozenset({"ingress"}),
        "supervise": frozenset({"supervisor"}),
        "run_worker": frozenset({"worker"}),
        "serve": SERVICES,
    },
    "callback_sink/cli.py": {
        "main": EVERY,
        "_ingress": frozenset({"supervisor"}),
        "_run": frozenset({"ingress"}),
        "_secret": frozenset({"sign"}),
    },
}
#: Properties and methods of Settings, by the fields they read.
DERIVED = {
    "amqp_urls": ("amqp_url",),
    "ordered_partitions": ("ordering", "partitions"),
    "require_secrets": ("secrets", "apps"),
    "check": (),
    "from_env": (),
}


def reads(path: Path) -> list[tuple[str, str]]:
    """``(function, field)`` for each ``settings.<field>`` (or ``self.settings``) in ``path``."""
    tree = ast.parse(path.read_text(encoding="utf-8"))
    found: list[tuple[str, str]] = []
    for top in ast.walk(tree):
        if not isinstance(top, ast.FunctionDef | ast.AsyncFunctionDef):
            continue
        for node in ast.walk(top):
            if not isinstance(node, ast.Attribute):
                continue
            owner = node.value
            if (isinstance(owner, ast.Name) and owner.id == "settings") or (
                isinstance(owner, ast.Attribute) and owner.attr in ("settings", "_settings")
                and isinstance(owner.value, ast.Name) and owner.value.id == "self"
            ):  # fmt: skip
                found.append((top.name, node.attr))
    return found


def test_every_field_a_process_reads_is_declared_for_its_kind() -> None:
    names = {f.name for f in fields(Settings)}
    declared = {f.name: setting_of(f).kinds for f in fields(Settings)}
    missing: set[str] = set()
    checked = 0
    for rel, kinds in MODULE_KINDS.items():
        paths = sorted((ROOT / rel).rglob("*.py")) if (ROOT / rel).is_dir() else [ROOT / rel]
        for path in paths:
            for function, attr in reads(path):
                for name in DERIVED.get(attr, (attr,) if attr in names else ()):
                    checked += 1
                    if not kinds <= declared[name]:
                        missing.add(f"{path.relative_to(ROOT)}:{function} reads {name}")
    for rel, by_function in FUNCTION_KINDS.items():
        for function, attr in reads(ROOT / rel):
            if function not in by_function:
                continue
            for name in DERIVED.get(attr, (attr,) if attr in names else ()):
                checked += 1
                if not by_function[function] <= declared[name]:
                    missing.add(f"{rel}:{function} reads {name}")
    assert checked > 50, "the scan found the settings reads"
    assert missing == set()


def test_the_settings_reference_is_what_the_declarations_generate() -> None:
    committed = docs_gen.REFERENCE.read_text(encoding="utf-8")
    assert committed == reference() + "\n", "run: python -m callback_sink.docs_gen"


def test_every_generated_reference_page_is_current() -> None:
    """settings, log events, commands, event names, metrics and alerts, HTTP endpoints: each
    page under docs/reference/ that docs_gen writes is what the code makes of it now."""
    assert docs_gen.stale() == [], "run: python -m callback_sink.docs_gen"
    settings_page = docs_gen.REFERENCE.read_text(encoding="utf-8")
    for v in variables(Settings, "SINK_"):
        assert f"`{v.name}`" in settings_page
