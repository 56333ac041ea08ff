"""Every public class in `deepfm` documents its arguments (`Args:`) and its use (`Example::`)."""

from __future__ import annotations

import dataclasses
import importlib
import inspect
import pkgutil

import pytest

import deepfm


def public_classes() -> list[type]:
    """The classes each module defines under a public name (aliases and imports left out)."""
    classes = []
    for info in pkgutil.walk_packages(deepfm.__path__, "deepfm."):
        if info.name.rpartition(".")[2] == "__main__":
            continue
        module = importlib.import_module(info.name)
        for name, value in vars(module).items():
            if (
                inspect.isclass(value)
                and not name.startswith("_")
                and value.__module__ == module.__name__
                and value.__qualname__ == name
            ):
                classes.append(value)
    return classes


def takes_arguments(cls: type) -> bool:
    """Fields of a dataclass or named tuple, or an `__init__` of our own with parameters."""
    if getattr(cls, "_is_protocol", False):  # an interface: nothing to construct
        return False
    if dataclasses.is_dataclass(cls):
        return bool(dataclasses.fields(cls))
    if issubclass(cls, tuple) and hasattr(cls, "_fields"):
        return bool(cls._fields)
    for owner in cls.__mro__:
        if "__init__" in vars(owner) and owner.__module__.startswith("deepfm."):
            return len(inspect.signature(owner.__init__).parameters) > 1
    return False


CLASSES = public_classes()


def test_finds_the_classes() -> None:
    names = {cls.__qualname__ for cls in CLASSES}
    assert {"FeatureEmbedding", "ExperimentConfig", "DeepFM", "UserError", "Trainer"} <= names


@pytest.mark.parametrize("cls", CLASSES, ids=lambda cls: f"{cls.__module__}.{cls.__qualname__}")
def test_public_class_has_args_and_example(cls: type) -> None:
    doc = inspect.getdoc(cls) or ""
    missing = [section for section in ("Args:", "Example::") if section not in doc]
    if not takes_arguments(cls) and "Args:" in missing:
        missing.remove("Args:")
    assert not missing, f"{cls.__module__}.{cls.__qualname__} docstring lacks {missing}"
