"""``callback-sink init NAME`` writes a handler package whose own tests run the real kit."""

from __future__ import annotations

import os
import subprocess
import sys
import sysconfig
import tomllib
from pathlib import Path

import pytest

from callback_sink import cli
from callback_sink.handlers.registry import ENTRY_POINT_GROUP
from tests.needs import missing

NAME = "acme_handlers"


def init(where: Path, name: str, monkeypatch: pytest.MonkeyPatch) -> int:
    monkeypatch.chdir(where)
    return cli.main(["init", name])


def test_init_writes_a_package_with_an_entry_point_an_example_handler_tests_and_a_readme(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    assert init(tmp_path, NAME, monkeypatch) == 0
    root = tmp_path / NAME
    project = tomllib.loads((root / "pyproject.toml").read_text())
    assert project["project"]["entry-points"][ENTRY_POINT_GROUP] == {NAME: f"{NAME}.callbacks"}
    assert "callback-sink" in project["project"]["dependencies"]
    assert '@on("muc:create"' in (root / NAME / "callbacks.py").read_text()
    assert "from callback_sink.testing import" in (root / "tests" / "test_callbacks.py").read_text()
    readme = (root / "README.md").read_text()
    assert "callback-sink run" in readme and "callback-sink send" in readme


@pytest.mark.parametrize(
    ("name", "why"),
    [("acme-handlers", "not a valid Python package name"), ("class", "not a valid"),
     ("2fast", "not a valid"), ("callback_sink", "callback-sink's own package"),
     ("tests", "the tests folder")],
)  # fmt: skip
def test_init_refuses_a_name_that_is_not_a_usable_package_name_in_one_line(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str],
    name: str, why: str,
) -> None:  # fmt: skip
    assert init(tmp_path, name, monkeypatch) == 1
    error = capsys.readouterr().err
    assert why in error and error.count("\n") == 1
    assert list(tmp_path.iterdir()) == []


def test_init_refuses_a_folder_that_already_exists_and_leaves_it_alone(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    (tmp_path / NAME).mkdir()
    (tmp_path / NAME / "mine.txt").write_text("keep me")
    assert init(tmp_path, NAME, monkeypatch) == 1
    assert "already exists" in capsys.readouterr().err
    assert [p.name for p in (tmp_path / NAME).iterdir()] == ["mine.txt"]


#: Generic top-level names an application may well use for its own packages.
SHADOWED = ("handlers", "worker", "sink", "ingress", "easemob")


def shadow_packages(root: Path) -> Path:
    """``root`` holding the application's own ``handlers``, ``worker``, ``sink``, ``ingress``
    and ``easemob`` packages; none of them has what callback-sink's packages of those names
    had, so any bare import of them from the sink fails."""
    for name in SHADOWED:
        (root / name).mkdir(parents=True)
        (root / name / "__init__.py").write_text(f'"""The application\'s own {name}."""\n')
    return root


def venv_with_the_sink(where: Path) -> Path:
    """A fresh virtualenv that sees this project's environment (the sink, pytest, setuptools)
    through a ``.pth`` file, without installing anything into that environment."""
    venv = where / "venv"
    subprocess.run([sys.executable, "-m", "venv", "--without-pip", str(venv)], check=True)
    python = venv / "bin" / "python"
    site = subprocess.run(
        [python, "-c", "import sysconfig; print(sysconfig.get_paths()['purelib'])"],
        check=True, capture_output=True, text=True,
    ).stdout.strip()  # fmt: skip
    ours = sysconfig.get_paths()["purelib"]
    (Path(site) / "callback_sink_parent.pth").write_text(
        f"import site; site.addsitedir({ours!r})\n"
    )
    # setuptools builds wheels (an editable install is one) with the `wheel` package.
    fetched = pip(python, "install", "--quiet", "wheel")
    if fetched.returncode != 0:
        missing(f"cannot install `wheel` from the package index: {fetched.stderr[-500:]}")
    return python


def pip(python: Path, *args: str) -> subprocess.CompletedProcess[str]:
    env = {**os.environ, "PIP_DISABLE_PIP_VERSION_CHECK": "1"}
    return subprocess.run([python, "-m", "pip", *args], capture_output=True, text=True, env=env)


def pytest_in(python: Path, package: Path) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [python, "-m", "pytest", "-q", "-p", "no:cacheprovider"],
        cwd=package, capture_output=True, text=True, timeout=120,
    )  # fmt: skip


@pytest.mark.timeout(180)
def test_the_generated_package_installs_and_its_tests_pass_without_a_broker_and_fail_when_broken(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    assert init(tmp_path, NAME, monkeypatch) == 0
    package = tmp_path / NAME
    python = venv_with_the_sink(tmp_path)
    installed = pip(python, "install", "--no-deps", "--no-build-isolation", "-e", str(package))
    assert installed.returncode == 0, installed.stderr

    monkeypatch.setenv("SINK_AMQP_URL", "amqp://guest:guest@127.0.0.1:1/")  # no broker there
    # The application around it has its own top-level packages of the sink's old names.
    monkeypatch.setenv("PYTHONPATH", str(shadow_packages(tmp_path / "app")))
    passed = pytest_in(python, package)
    assert passed.returncode == 0, passed.stdout + passed.stderr
    assert "4 passed, 1 deselected" in passed.stdout  # the end-to-end test is opt-in

    found = subprocess.run(
        [python, "-c", "from callback_sink.handlers.registry import load\n"
         "print(*[h.name for h in load([], use_entry_points=True).handlers])"],
        capture_output=True, text=True, check=True,
    ).stdout.split()  # fmt: skip
    assert f"{NAME}.callbacks.record_new_group" in found

    handler = package / NAME / "callbacks.py"
    source = handler.read_text()
    assert 'created_groups.append(event.group_id or "")' in source
    handler.write_text(
        source.replace(
            'created_groups.append(event.group_id or "")', 'raise RuntimeError("broken")'
        )
    )
    failed = pytest_in(python, package)
    assert failed.returncode == 1, failed.stdout + failed.stderr
    assert "FAILED tests/test_callbacks.py::test_a_created_group_is_recorded" in failed.stdout
