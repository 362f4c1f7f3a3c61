"""Load rule packs from YAML, failing at load time with the file, line, rule and key.

The format is described in :mod:`fhirbridge.rules.model`. Several packs load as one: rule ids
must be unique over all of them; ``codes`` and ``defaults`` merge, later files overriding
earlier ones key by key; every Task code a rule uses must be defined by some loaded pack.
"""

from __future__ import annotations

from collections.abc import Sequence
from functools import cache
from pathlib import Path

from pydantic import ValidationError

from fhirbridge._shipped import mappings_dir
from fhirbridge._yaml import YamlDoc, read_yaml, schema_keys, validation_error
from fhirbridge.errors import RuleError
from fhirbridge.rules.dispositions import DispositionTable
from fhirbridge.rules.evaluate import RulePack
from fhirbridge.rules.model import Defaults, Rule, RuleFile, yaml_loc

__all__ = ["SHIPPED_PACK", "load_rule_file", "load_rules"]

#: The shipped rule pack, relative to :func:`~fhirbridge.rules.mappings_dir`.
SHIPPED_PACK = "transitional-care.yaml"


@cache
def _known_keys() -> frozenset[str]:
    """The keys a rule pack may use anywhere, for "did you mean" on an unknown one."""
    return schema_keys(RuleFile)


def load_rule_file(path: Path) -> tuple[RuleFile, YamlDoc]:
    """Parse and validate one rule-pack file (no cross-file checks)."""
    if path.is_dir():
        raise RuleError(f"{path}: is a folder; name the rule-pack files")
    doc = read_yaml(path)
    if doc.data is None:
        raise RuleError(f"{doc.name}: the file is empty (a rule pack starts with 'version: 1')")
    try:
        model = RuleFile.model_validate(doc.data)
    except ValidationError as exc:
        raise validation_error(doc, exc, rewrite=yaml_loc, known=_known_keys()) from exc
    seen: dict[str, int] = {}
    for index, rule in enumerate(model.rules):
        if rule.id in seen:
            first = doc.line(("rules", seen[rule.id], "id"))
            raise doc.error(
                ("rules", index, "id"), f"duplicate rule id (first defined on line {first})"
            )
        seen[rule.id] = index
        _check_action_ids(doc, index, rule)
    return model, doc


def _check_action_ids(doc: YamlDoc, index: int, rule: Rule) -> None:
    """Action ids are part of Task identifiers: two actions of one rule may not share one."""
    first_at: dict[str, int] = {}
    for number, item in enumerate(rule.then):
        task = item.task
        if task is None:
            continue
        key = "create-task" if item.create_task is not None else "escalate"
        if task.id in first_at:
            first = doc.line(("rules", index, "then", first_at[task.id]))
            raise doc.error(
                ("rules", index, "then", number, key, "id"),
                f"duplicate action id {task.id!r} in this rule (first on line {first})",
            )
        first_at[task.id] = number


def load_rules(
    paths: Sequence[Path] | None = None,
    dispositions: DispositionTable | None = None,
) -> RulePack:
    """Load rule packs into one :class:`~fhirbridge.rules.RulePack`.

    ``paths`` None loads the shipped ``mappings/transitional-care.yaml``. ``dispositions``
    (default: the shipped table) derives ``disposition_group`` when a transition lacks it.
    Raises :class:`~fhirbridge.errors.RuleError` on the first problem found.
    """
    files = list(paths) if paths is not None else [mappings_dir() / SHIPPED_PACK]
    loaded = [load_rule_file(Path(p)) for p in files]

    defaults = Defaults()
    codes: dict[str, str] = {}
    owners: dict[str, str] = {}
    for model, doc in loaded:
        defaults = defaults.merged(model.defaults)
        codes.update({code: spec.display for code, spec in model.codes.items()})
        for index, rule in enumerate(model.rules):
            where = f"{doc.name}:{doc.line(('rules', index, 'id'))}"
            if rule.id in owners:
                raise doc.error(
                    ("rules", index, "id"),
                    f"duplicate rule id (first defined at {owners[rule.id]})",
                )
            owners[rule.id] = where

    for model, doc in loaded:
        for index, rule in enumerate(model.rules):
            for number, item in enumerate(rule.then):
                task = item.task
                if task is not None and task.code not in codes:
                    key = "create-task" if item.create_task is not None else "escalate"
                    known = ", ".join(sorted(codes)) or "none defined"
                    raise doc.error(
                        ("rules", index, "then", number, key, "code"),
                        f"{task.code!r} is not defined under codes ({known})",
                    )

    rules = tuple(rule for model, _ in loaded for rule in model.rules)
    return RulePack(
        rules=rules,
        codes=codes,
        defaults=defaults,
        sources=tuple(doc.path for _, doc in loaded),
        dispositions=dispositions,
    )
