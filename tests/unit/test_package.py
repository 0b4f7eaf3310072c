"""The package as installed: data files present, and (under `make dist-check`) the wheel is what
the suite runs against, not the source tree."""

from __future__ import annotations

import os
from importlib import resources
from pathlib import Path

import pytest

import certpin

REPO_SRC = Path(__file__).resolve().parents[2] / "src"


def test_py_typed_ships_with_the_package() -> None:
    assert resources.files("certpin").joinpath("py.typed").is_file()


def test_every_layer_package_is_importable_from_the_installed_tree() -> None:
    root = resources.files("certpin")
    layers = ("core", "tls", "dynamic", "reporting", "lifecycle", "formats", "collector", "cli")
    for layer in layers:
        assert root.joinpath(layer, "__init__.py").is_file(), layer


@pytest.mark.skipif(
    os.environ.get("CERTPIN_TEST_INSTALLED") != "1",
    reason="only under `make dist-check`, which installs the wheel into a clean virtualenv",
)
def test_the_suite_runs_against_the_installed_wheel() -> None:
    location = Path(certpin.__file__).resolve()
    assert "site-packages" in location.parts
    assert not location.is_relative_to(REPO_SRC)
