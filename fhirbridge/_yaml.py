"""YAML files that remember where each key was, and validation errors that point at it.

A mappings file is parsed once into both the plain data (for pydantic) and PyYAML's node tree
(which carries line numbers). When validation fails, the error's location (``rules, 2, when,
disposition_group``) is walked down the node tree to find the line, and the message becomes one
line an integration engineer can act on::

    mappings/x.yaml:14: rule 'discharge-home': when.disposition_group: 'hom' is not one of ...
"""

from __future__ import annotations

import difflib
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import yaml
from pydantic import BaseModel, ValidationError

from fhirbridge.errors import RuleError

__all__ = [
    "Loader",
    "YamlDoc",
    "did_you_mean",
    "first_error",
    "one_of",
    "read_yaml",
    "schema_keys",
    "validation_error",
    "yaml_problem",
]

Loc = tuple[str | int, ...]
_TIMESTAMP = "tag:yaml.org,2002:timestamp"


class Loader(yaml.SafeLoader):
    """PyYAML's safe loader that leaves dates as text: ``2026-13-45`` would otherwise fail
    inside the parser, with no key named; pydantic reads the text and names the key."""


Loader.yaml_implicit_resolvers = {
    first: [(tag, regexp) for tag, regexp in resolvers if tag != _TIMESTAMP]
    for first, resolvers in yaml.SafeLoader.yaml_implicit_resolvers.items()
}


def yaml_problem(name: str, exc: yaml.YAMLError) -> str:
    """One line for a YAML syntax error: ``file:line: not valid YAML: problem``."""
    if isinstance(exc, yaml.MarkedYAMLError):
        mark = exc.problem_mark or exc.context_mark
        where = f":{mark.line + 1}" if mark is not None else ""
        problem = exc.problem or exc.context or "not valid YAML"
        if exc.context and exc.problem and exc.context_mark is not None:
            problem += f" ({exc.context} on line {exc.context_mark.line + 1})"
        return f"{name}{where}: not valid YAML: {problem}"
    return f"{name}: not valid YAML: {str(exc).splitlines()[0] if str(exc) else exc!r}"


def schema_keys(model: type[BaseModel]) -> frozenset[str]:
    """Every key (property name, as written in YAML) anywhere in ``model``'s schema."""
    keys: set[str] = set()
    stack: list[Any] = [model.model_json_schema(by_alias=True)]
    while stack:
        item = stack.pop()
        if isinstance(item, Mapping):
            properties = item.get("properties")
            if isinstance(properties, Mapping):
                keys.update(str(k) for k in properties)
            stack.extend(item.values())
        elif isinstance(item, list):
            stack.extend(item)
    return frozenset(keys)


def did_you_mean(key: str, known: Iterable[str]) -> str:
    """`` (did you mean 'due'?)`` when ``key`` is close to one of ``known``, else ``""``."""
    close = difflib.get_close_matches(key, sorted(set(known)), n=1, cutoff=0.6)
    return f" (did you mean {close[0]!r}?)" if close else ""


def display_path(path: Path) -> str:
    """``path`` relative to the working directory when it is below it, else as given."""
    try:
        return str(path.resolve().relative_to(Path.cwd().resolve()))
    except ValueError:
        return str(path)


@dataclass(frozen=True, slots=True)
class YamlDoc:
    """One parsed YAML file: its data, its node tree (for line numbers) and its path."""

    path: Path
    data: Any
    node: yaml.Node | None

    @property
    def name(self) -> str:
        """The path as error messages show it."""
        return display_path(self.path)

    def line(self, loc: Loc) -> int:
        """The 1-based line of the deepest key or item of ``loc`` that exists in the file."""
        return _walk(self.node, loc)[0]

    def where(self, loc: Loc, line: int | None = None) -> str:
        """``file:line: rule 'id': path`` for ``loc`` (the rule part only under ``rules``).

        ``line`` overrides the line found by walking ``loc``.
        """
        found, found_scalar_at = _walk(self.node, loc)
        line = found if line is None else line
        shown = loc if found_scalar_at is None else _drop_list_indexes(loc, found_scalar_at)
        prefix = f"{self.name}:{line}: "
        rest: Loc = shown
        if len(shown) >= 2 and shown[0] == "rules" and isinstance(shown[1], int):
            prefix += f"{self.rule_label(shown[1])}: "
            rest = shown[2:]
        path = format_loc(rest)
        return f"{prefix}{path}" if path else prefix.rstrip(": ")

    def rule_label(self, index: int) -> str:
        """``rule 'id'`` for the rule at ``index`` of ``rules``, or ``rule #n`` without an id."""
        rules = self.data.get("rules") if isinstance(self.data, Mapping) else None
        if isinstance(rules, list) and 0 <= index < len(rules):
            rule = rules[index]
            if isinstance(rule, Mapping) and isinstance(rule.get("id"), str):
                return f"rule {rule['id']!r}"
        return f"rule #{index + 1}"

    def error(self, loc: Loc, message: str, line: int | None = None) -> RuleError:
        """A :class:`RuleError` for ``loc`` with ``message`` (``line`` overrides the line)."""
        return RuleError(f"{self.where(loc, line)}: {message}")


def read_yaml(path: Path) -> YamlDoc:
    """Parse ``path``; raise :class:`RuleError` (with the line) when it is not valid YAML.

    Duplicate keys in one mapping are errors too: PyYAML would silently keep the last one.
    """
    name = display_path(path)
    try:
        text = path.read_text(encoding="utf-8")
    except OSError as exc:
        raise RuleError(f"{name}: cannot read: {exc.strerror or exc}") from exc
    loader = Loader(text)
    try:
        node = loader.get_single_node()
        data = loader.construct_document(node) if node is not None else None
    except yaml.YAMLError as exc:
        raise RuleError(yaml_problem(name, exc)) from exc
    finally:
        loader.dispose()
    doc = YamlDoc(path=path, data=data, node=node)
    _check_duplicate_keys(doc, node, ())
    return doc


def _check_duplicate_keys(doc: YamlDoc, node: yaml.Node | None, loc: Loc) -> None:
    if isinstance(node, yaml.MappingNode):
        seen: set[str] = set()
        for key_node, value_node in node.value:
            key = str(key_node.value)
            if key in seen:
                line = key_node.start_mark.line + 1
                raise doc.error(loc, f"duplicate key {key!r}", line)
            seen.add(key)
            _check_duplicate_keys(doc, value_node, (*loc, key))
    elif isinstance(node, yaml.SequenceNode):
        for index, item in enumerate(node.value):
            _check_duplicate_keys(doc, item, (*loc, index))


def _walk(node: yaml.Node | None, loc: Loc) -> tuple[int, int | None]:
    """Follow ``loc`` down the node tree.

    Returns the line of the last key/item found, and the position in ``loc`` where a scalar
    was met with more of ``loc`` left (a scalar that a validator wrapped into a list).
    """
    if node is None:
        return 1, None
    line = node.start_mark.line + 1
    for position, part in enumerate(loc):
        if isinstance(node, yaml.MappingNode):
            for key_node, value_node in node.value:
                if str(key_node.value) == str(part):
                    line = key_node.start_mark.line + 1
                    node = value_node
                    break
            else:
                return line, None
        elif isinstance(node, yaml.SequenceNode) and isinstance(part, int):
            if not 0 <= part < len(node.value):
                return line, None
            node = node.value[part]
            line = node.start_mark.line + 1
        elif isinstance(node, yaml.ScalarNode):
            return line, position
        else:
            return line, None
    return line, None


def _drop_list_indexes(loc: Loc, start: int) -> Loc:
    return loc[:start] + tuple(p for p in loc[start:] if not isinstance(p, int))


def format_loc(loc: Iterable[str | int]) -> str:
    """``then[0].create-task.due`` for ``("then", 0, "create-task", "due")``."""
    out = ""
    for part in loc:
        if isinstance(part, int):
            out += f"[{part}]"
        else:
            out += f".{part}" if out else str(part)
    return out


def _message(error: Mapping[str, Any]) -> str:
    kind = error["type"]
    ctx = error.get("ctx") or {}
    value = error.get("input")
    loc = error["loc"]
    if kind in {"value_error", "assertion_error"} and "error" in ctx:
        return str(ctx["error"])
    if kind == "extra_forbidden":
        return f"unknown key {loc[-1]!r}" if loc else "unknown key"
    if kind == "missing":
        return f"missing required key {loc[-1]!r}" if loc else "missing"
    if kind == "literal_error":
        expected = str(ctx.get("expected", "")).replace("'", "").replace(" or ", ", ")
        return f"{value!r} is not one of {expected}"
    if kind in {"model_type", "dict_type", "model_attributes_type"}:
        return f"expected a mapping, got {value!r}"
    if kind in {"tuple_type", "list_type"}:
        return f"expected a list, got {value!r}"
    if kind in {"int_type", "int_parsing", "int_from_float"}:
        return f"expected a whole number, got {value!r}"
    if kind in {"bool_type", "bool_parsing"}:
        return f"expected true or false, got {value!r}"
    if kind in {"string_type"}:
        return f"expected text, got {value!r}"
    if kind == "greater_than_equal":
        return f"must be at least {ctx.get('ge')}, got {value!r}"
    if kind == "less_than_equal":
        return f"must be at most {ctx.get('le')}, got {value!r}"
    if kind.startswith(("date_", "datetime_")):
        why = str(ctx.get("error", "")).strip() or "not a date"
        return f"{value!r} is not a valid date ({why}): write it as YYYY-MM-DD"
    if kind.startswith("time_delta"):
        return f"{value!r} is not a duration: write it as ISO 8601, such as P14D or PT12H"
    if kind == "too_short":
        return "must not be empty" if not value else f"too short: {value!r}"
    return f"{error['msg']}, got {value!r}"


def first_error(exc: ValidationError) -> Mapping[str, Any]:
    """The error to report: an unknown key before all else (a typo such as ``deu:`` for
    ``due:`` is also reported as the missing ``due``; the unknown key is the cause), with the
    missing keys of the same mapping offered as ``suggest``."""
    errors = exc.errors(include_url=False)
    for error in errors:
        if error["type"] == "extra_forbidden" and error["loc"]:
            parent = error["loc"][:-1]
            missing = [
                str(e["loc"][-1])
                for e in errors
                if e["type"] == "missing" and e["loc"] and e["loc"][:-1] == parent
            ]
            return {**error, "suggest": missing}
    return errors[0]


def validation_error(
    doc: YamlDoc,
    exc: ValidationError,
    rewrite: Callable[[Loc], Loc] | None = None,
    known: Iterable[str] = (),
) -> RuleError:
    """Turn pydantic's first error into one :class:`RuleError` line naming file, line, rule, key.

    An unknown key comes with the closest of the mapping's missing keys or of ``known``.
    """
    error = first_error(exc)
    # pydantic marks a bad mapping key with a "[key]" step after the key itself.
    loc: Loc = tuple(p for p in error["loc"] if p != "[key]")
    if rewrite is not None:
        loc = rewrite(loc)
    fixed = dict(error)
    fixed["loc"] = loc
    message = _message(fixed)
    if error["type"] == "extra_forbidden" and loc:
        message += did_you_mean(str(loc[-1]), error.get("suggest") or known)
    if error["type"] in {"missing", "extra_forbidden"} and loc:
        # Name the mapping that lacks (or should not have) the key; point at the key's line
        # when it exists (an unknown key), else at the mapping.
        return doc.error(loc[:-1], message, doc.line(loc))
    return doc.error(loc, message)


def one_of(allowed: Sequence[str]) -> Callable[[str], str]:
    """A pydantic after-validator: the value must be one of ``allowed`` (listed on failure)."""

    def check(value: str) -> str:
        if value not in allowed:
            raise ValueError(f"{value!r} is not one of {', '.join(allowed)}")
        return value

    return check
