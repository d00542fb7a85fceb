"""The wheel holds every package, layers never import the root, the public names resolve.

The layers live in top-level folders mapped into ``eventcenter`` by setuptools ``package-dir``
(see PACKAGING.md). An unlisted package is silently left out of the wheel, and a layer that
imports the root ``eventcenter`` pulls in the composition root: both are caught here.
"""

from __future__ import annotations

import ast
import importlib
import tomllib
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

import eventcenter

ROOT = Path(__file__).resolve().parents[2]
LAYERS = ("center", "domain", "handlers", "projections", "pressure")
# Top-level folders that are not packages of the wheel even if they hold an __init__.py.
NOT_SHIPPED = {"tests", "bench", "build", "src", "docs"}


def pyproject() -> dict[str, Any]:
    with (ROOT / "pyproject.toml").open("rb") as file:
        return tomllib.load(file)


def package_dirs() -> dict[str, Path]:
    """``package-dir`` of pyproject.toml: dotted package name -> folder."""
    mapping = pyproject()["tool"]["setuptools"]["package-dir"]
    return {name: ROOT / folder for name, folder in mapping.items()}


def packages_on_disk() -> set[str]:
    """Every folder holding ``__init__.py`` under a mapped folder, as a dotted name."""
    found: set[str] = set()
    for name, folder in package_dirs().items():
        for init in folder.rglob("__init__.py"):
            if "__pycache__" in init.parts:
                continue
            relative = init.parent.relative_to(folder).parts
            found.add(".".join((name, *relative)))
    return found


def layer_modules() -> Iterator[tuple[str, Path]]:
    """(dotted module name, file) of every module in the layer folders (not the root)."""
    for name, folder in package_dirs().items():
        if name == "eventcenter":
            continue
        for file in sorted(folder.rglob("*.py")):
            if "__pycache__" in file.parts:
                continue
            parts = file.relative_to(folder).with_suffix("").parts
            yield ".".join((name, *parts)), file


def root_imports(module: str, source: str, *, is_package: bool = False) -> list[str]:
    """Import statements of ``module`` (given its ``source``) that load the root package.

    ``import eventcenter``, ``from eventcenter import X`` and a relative import that climbs to
    the root (``from .. import X`` in a layer) all run the root's lazy ``__getattr__``. Text in
    docstrings does not count: the statements are read from the syntax tree.
    """
    package = module.split(".") if is_package else module.split(".")[:-1]
    offending: list[str] = []
    for node in ast.walk(ast.parse(source)):
        if isinstance(node, ast.Import):
            if any(alias.name == "eventcenter" for alias in node.names):
                offending.append(f"line {node.lineno}: {ast.unparse(node)}")
        elif isinstance(node, ast.ImportFrom):
            if node.level == 0:
                target = node.module
            else:
                base = package[: len(package) - (node.level - 1)]
                target = ".".join(base + ([node.module] if node.module else []))
            if target == "eventcenter":
                offending.append(f"line {node.lineno}: {ast.unparse(node)}")
    return offending


class TestWheelContents:
    def test_every_layer_folder_is_mapped(self) -> None:
        mapping = pyproject()["tool"]["setuptools"]["package-dir"]

        assert mapping["eventcenter"] == "src/eventcenter"
        for layer in LAYERS:
            assert mapping.get(f"eventcenter.{layer}") == layer

    def test_top_level_packages_are_all_mapped(self) -> None:
        mapped = {path.resolve() for path in package_dirs().values()}
        unmapped = [
            folder.name
            for folder in sorted(ROOT.iterdir())
            if folder.is_dir()
            and not folder.name.startswith(".")
            and folder.name not in NOT_SHIPPED
            and (folder / "__init__.py").is_file()
            and folder.resolve() not in mapped
        ]

        assert unmapped == [], "add these folders to [tool.setuptools.package-dir]"

    def test_packages_list_matches_the_folders(self) -> None:
        listed = pyproject()["tool"]["setuptools"]["packages"]

        assert len(listed) == len(set(listed)), "a package is listed twice"
        assert set(listed) == packages_on_disk()

    def test_no_module_folder_lacks_init(self) -> None:
        """A sub-folder of .py files without __init__.py would be left out of the wheel."""
        missing = sorted(
            str(folder.relative_to(ROOT))
            for _, file in layer_modules()
            for folder in [file.parent]
            if not (folder / "__init__.py").is_file()
        )

        assert missing == []


class TestLayerImports:
    def test_layers_never_import_the_root_package(self) -> None:
        offending = [
            f"{file.relative_to(ROOT)} {line}"
            for module, file in layer_modules()
            for line in root_imports(
                module, file.read_text(encoding="utf-8"), is_package=file.name == "__init__.py"
            )
        ]

        assert offending == [], "import from the layer itself (eventcenter.domain.event ...)"

    def test_the_check_sees_every_form_of_root_import(self) -> None:
        source = (
            '"""Docs may say: from eventcenter import EventCenter."""\n'
            "import eventcenter\n"
            "import eventcenter as ec\n"
            "from eventcenter import Event\n"
            "from .. import Event\n"
            "from ..domain import event\n"
            "from . import settings\n"
            "import eventcenter.domain\n"
            "from eventcenter.domain.event import Event\n"
        )

        found = root_imports("eventcenter.center.probe", source)

        assert found == [
            "line 2: import eventcenter",
            "line 3: import eventcenter as ec",
            "line 4: from eventcenter import Event",
            "line 5: from .. import Event",
        ]

    def test_relative_imports_in_a_package_init_resolve_from_the_package(self) -> None:
        source = "from . import settings\nfrom .. import Event\n"

        found = root_imports("eventcenter.center", source, is_package=True)

        assert found == ["line 2: from .. import Event"]


class TestPublicNames:
    def test_all_is_sorted_and_unique(self) -> None:
        assert eventcenter.__all__ == sorted(set(eventcenter.__all__))

    @pytest.mark.parametrize("name", eventcenter.__all__)
    def test_public_name_resolves(self, name: str) -> None:
        assert getattr(eventcenter, name) is not None

    def test_unknown_name_is_an_attribute_error(self) -> None:
        with pytest.raises(AttributeError, match="no attribute 'Nope'"):
            _ = eventcenter.Nope

    def test_type_checkers_see_the_same_names_as_runtime(self) -> None:
        """The ``if TYPE_CHECKING:`` imports mirror the lazy table, name for name."""
        source = (ROOT / "src" / "eventcenter" / "__init__.py").read_text(encoding="utf-8")
        seen: dict[str, str] = {}
        for node in ast.walk(ast.parse(source)):
            if (
                isinstance(node, ast.If)
                and isinstance(node.test, ast.Name)
                and node.test.id == "TYPE_CHECKING"
            ):
                for statement in node.body:
                    assert isinstance(statement, ast.ImportFrom)
                    for alias in statement.names:
                        seen[alias.asname or alias.name] = str(statement.module)

        exports = importlib.import_module("eventcenter")._EXPORTS

        assert seen == exports

    def test_version_matches_pyproject(self) -> None:
        assert eventcenter.__version__ == pyproject()["project"]["version"]
