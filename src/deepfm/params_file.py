"""Reading a params file: YAML that gives each key once, and pydantic's validation errors
as one line that names the full key and what is allowed."""

from __future__ import annotations

import dataclasses
import typing
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import yaml

from deepfm.errors import UserError


class ConfigError(UserError, ValueError):
    """A params file or mapping that does not describe a valid experiment.

    Example::

        raise ConfigError("params.yaml: model.dnn.dropout must be below 1, got 1.5")
    """


def read_params_file(path: Path) -> Any:
    """The plain values of YAML file `path` (`{}` for an empty file); a missing file,
    invalid YAML or a key given twice in one mapping is a `ConfigError` naming `path`."""
    if not path.is_file():
        raise ConfigError(f"params file not found: {path}")
    try:
        return yaml.load(path.read_text(encoding="utf-8"), Loader=_UniqueKeyLoader) or {}
    except yaml.YAMLError as err:
        raise ConfigError(f"{path}: not valid YAML: {' '.join(str(err).split())}") from None
    except ConfigError as err:
        raise ConfigError(f"{path}: {err}") from None


class _UniqueKeyLoader(yaml.SafeLoader):
    """A SafeLoader that refuses a key given twice in one mapping (PyYAML keeps the last)."""

    def construct_document(self, node: yaml.Node) -> Any:
        _refuse_repeated_keys(node, "")
        return super().construct_document(node)


def _refuse_repeated_keys(node: yaml.Node, where: str) -> None:
    if isinstance(node, yaml.MappingNode):
        first_line: dict[str, int] = {}
        for key_node, value_node in node.value:
            key = f"{where}.{key_node.value}" if where else str(key_node.value)
            line = key_node.start_mark.line + 1
            if key in first_line:
                raise ConfigError(
                    f"line {line}: key {key!r} is given again (first on line {first_line[key]}); "
                    f"give each key once"
                )
            first_line[key] = line
            _refuse_repeated_keys(value_node, key)
    elif isinstance(node, yaml.SequenceNode):
        for index, item in enumerate(node.value):
            _refuse_repeated_keys(item, f"{where}[{index}]")


# How each pydantic error type reads after the key; `{got}` is the refused value.
_MESSAGES = {
    "greater_than": " must be > {gt}, got {got}",
    "greater_than_equal": " must be >= {ge}, got {got}",
    "less_than": " must be < {lt}, got {got}",
    "less_than_equal": " must be <= {le}, got {got}",
    "finite_number": " must be a finite number, got {got}",
    "too_short": " must have at least {min_length} entry, got {got}",
    "string_too_short": " must not be empty",
    "float_type": ": expected a number, got {got}",
    "int_type": ": expected an integer, got {got}",
    "bool_type": ": expected true or false, got {got}",
    "string_type": ": expected a string, got {got}",
    "literal_error": ": {got} is not allowed; choose from {expected}",
    "tuple_type": ": expected a list, got {got}",
    "dict_type": ": expected a mapping, got {got}",
    "dataclass_type": ": expected a mapping, got {got}",
    "missing": " is required",
}


def describe_error(error: Mapping[str, Any], root: type) -> str:
    """One line for one pydantic error of validating `root` (a pydantic dataclass of
    sections): the full key (`model.dnn.hidden_units[0]`) and why."""
    loc = tuple(error["loc"])
    if loc[-1:] == ("[key]",):  # a refused mapping key: name the mapping
        loc = loc[:-2]
    key = "".join(f"[{part}]" if isinstance(part, int) else f".{part}" for part in loc)[1:]
    if error["type"] == "unexpected_keyword_argument":
        valid = ", ".join(_keys_at(root, loc[:-1])) or "(none)"
        return f"unknown key {key!r}; valid keys here: {valid}"
    if error["type"] == "value_error":  # our validators: the text reads after the key
        text = str(error["ctx"]["error"])
        return f"{key} {text}" if key else text
    got = repr(error["input"])
    got = got if len(got) <= 80 else got[:77] + "..."
    template = _MESSAGES.get(error["type"], ": {msg}, got {got}")
    return (key or "params") + template.format(got=got, msg=error["msg"], **error.get("ctx", {}))


def _keys_at(root: type, loc: tuple[Any, ...]) -> list[str]:
    """The keys the section of `root` at `loc` accepts."""
    hint: Any = root
    for part in loc:
        hint = (
            typing.get_args(hint)[0] if isinstance(part, int) else typing.get_type_hints(hint)[part]
        )
    return [f.name for f in dataclasses.fields(hint)]
