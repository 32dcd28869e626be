"""DynamoDB expressions and values, built with boto3's own condition builder and type serializer.

Conditions are boto3 `Attr(...)` objects (`ConditionExpressionBuilder` turns them into text with
`#n`/`:v` placeholders); updates are SET/REMOVE over dotted paths (`attempt.leaseUntil`) with
`#u`/`:u` placeholders of their own, so both merge into one request. Numbers go to DynamoDB as
`Decimal` and come back as `int` or `float`.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from decimal import Decimal
from typing import Any

from boto3.dynamodb.conditions import ConditionBase, ConditionExpressionBuilder
from boto3.dynamodb.types import TypeDeserializer, TypeSerializer

_serializer = TypeSerializer()
_deserializer = TypeDeserializer()


def to_dynamo(value: Any) -> Any:
    """Python values as boto3's serializer takes them: floats become Decimals (exactly as printed)."""
    if isinstance(value, bool) or value is None:
        return value
    if isinstance(value, float):
        return Decimal(repr(value))
    if isinstance(value, Mapping):
        return {str(key): to_dynamo(item) for key, item in value.items()}
    if isinstance(value, list | tuple):
        return [to_dynamo(item) for item in value]
    return value


def from_dynamo(value: Any) -> Any:
    """Decimals back to int (whole) or float, everywhere in a value."""
    if isinstance(value, Decimal):
        return int(value) if value == value.to_integral_value() else float(value)
    if isinstance(value, dict):
        return {key: from_dynamo(item) for key, item in value.items()}
    if isinstance(value, list | set):
        return [from_dynamo(item) for item in value]
    return value


def serialize(value: Any) -> dict[str, Any]:
    return dict(_serializer.serialize(to_dynamo(value)))


def item(values: Mapping[str, Any]) -> dict[str, Any]:
    """A Python mapping as a DynamoDB item (attribute values)."""
    return {key: serialize(value) for key, value in values.items()}


def plain(attributes: Mapping[str, Any]) -> dict[str, Any]:
    """A DynamoDB item as plain Python values."""
    return {key: from_dynamo(_deserializer.deserialize(value)) for key, value in attributes.items()}


@dataclass
class Expression:
    """Expression text with its placeholders (values already serialized)."""

    text: str = ""
    names: dict[str, str] = field(default_factory=dict)
    values: dict[str, Any] = field(default_factory=dict)


def condition(expression: ConditionBase, *, key: bool = False) -> Expression:
    """A condition (or, `key`, a Query's key condition: `Key(...)` objects) with its placeholders."""
    built = ConditionExpressionBuilder().build_expression(expression, is_key_condition=key)
    return Expression(
        built.condition_expression,
        dict(built.attribute_name_placeholders),
        {name: serialize(value) for name, value in built.attribute_value_placeholders.items()},
    )


def update(
    set_values: Mapping[str, Any], remove: Iterable[str] = (), append: Mapping[str, list[Any]] | None = None
) -> Expression:
    """`SET path = value, ...` (and `path = list_append(if_not_exists(path, []), value)` for `append`),
    then `REMOVE path, ...`. Paths are dotted attribute names."""
    expression = Expression()

    def name(path: str) -> str:
        parts = []
        for part in path.split("."):
            placeholder = f"#u{len(expression.names)}"
            expression.names[placeholder] = part
            parts.append(placeholder)
        return ".".join(parts)

    def value(raw: Any) -> str:
        placeholder = f":u{len(expression.values)}"
        expression.values[placeholder] = serialize(raw)
        return placeholder

    clauses = [f"{name(path)} = {value(raw)}" for path, raw in set_values.items()]
    for path, entries in (append or {}).items():
        target = name(path)
        clauses.append(f"{target} = list_append(if_not_exists({target}, {value([])}), {value(entries)})")
    removed = [name(path) for path in remove]
    text = ("SET " + ", ".join(clauses)) if clauses else ""
    if removed:
        text += (" " if text else "") + "REMOVE " + ", ".join(removed)
    expression.text = text
    return expression


def cancellation_codes(error: Any) -> list[str]:
    """The per-item reasons of a TransactionCanceledException ("None" for items that were fine)."""
    reasons = error.response.get("CancellationReasons") or []
    return [str(reason.get("Code") or "None") for reason in reasons]
