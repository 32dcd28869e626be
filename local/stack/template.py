"""Load a template and resolve it the way CloudFormation would, for one local stack.

What lives here: parameters (defaults, overrides, constraints), conditions, the
intrinsic functions and the dependency order of resources. SAM's own semantics
(Globals, policy templates, implicit roles, event sources) are the SAM transform's
(transform.py): this module sees the CloudFormation it produces. Physical ids (`Ref`)
and attributes (`Fn::GetAtt`) of resources are filled in by the provisioner as it
creates them, so a reference to something that does not exist (yet) fails loudly
instead of resolving to a placeholder.
"""

from __future__ import annotations

import base64
import json
import re
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import cfnlint.decode

ACCOUNT_ID = "123456789012"  # moto's default account
REGION = "us-east-1"


class TemplateError(Exception):
    """The template cannot be provisioned as written (the message says where and why)."""


class _NoValue:
    """`AWS::NoValue`: removes the property (or list item) that resolves to it."""

    def __repr__(self) -> str:
        return "AWS::NoValue"


NO_VALUE = _NoValue()

_SUB_VARIABLE = re.compile(r"\$\{([^}]*)\}")


def load_template(path: str | Path) -> dict[str, Any]:
    """Parse YAML/JSON incl. short-form intrinsics (`!Ref`, `!Sub`, ...) into plain dicts."""
    template, matches = cfnlint.decode.decode(str(path))
    if matches or template is None:
        raise TemplateError(f"{path}: cannot parse: {'; '.join(str(m) for m in matches)}")
    plain: dict[str, Any] = _plain(template)
    return plain


def _plain(value: Any) -> Any:
    """cfn-lint returns its own node classes; plain dicts/lists are easier to reason about."""
    if isinstance(value, Mapping):
        return {str(k): _plain(v) for k, v in value.items()}
    if isinstance(value, list):
        return [_plain(v) for v in value]
    if isinstance(value, str):
        return str(value)
    return value


# --------------------------------------------------------------------------- parameters
def resolve_parameters(template: dict[str, Any], overrides: Mapping[str, str]) -> dict[str, Any]:
    """Template defaults, then overrides; checks the declared constraints like CloudFormation."""
    declared: dict[str, Any] = template.get("Parameters", {}) or {}
    unknown = sorted(set(overrides) - set(declared))
    if unknown:
        raise TemplateError(f"Parameters {unknown} do not exist in the template")
    values: dict[str, Any] = {}
    for name, spec in declared.items():
        if name in overrides:
            raw: Any = overrides[name]
        elif "Default" in spec:
            raw = spec["Default"]
        else:
            raise TemplateError(
                f"Parameter '{name}' has no value: it has no Default, so pass it as an override ({name}=...)"
            )
        values[name] = _check_parameter(name, spec, raw)
    return values


def _check_parameter(name: str, spec: Mapping[str, Any], raw: Any) -> Any:
    kind = spec.get("Type", "String")
    value = _scalar_text(raw) if not isinstance(raw, list) else ",".join(map(str, raw))
    if kind == "CommaDelimitedList" or kind.startswith("List<"):
        return [item.strip() for item in value.split(",")] if value else []
    allowed = spec.get("AllowedValues")
    if allowed is not None and value not in [_scalar_text(a) for a in allowed]:
        raise TemplateError(f"Parameter '{name}' must be one of {allowed}, got {value!r}")
    pattern = spec.get("AllowedPattern")
    if pattern is not None and not re.fullmatch(pattern, value):
        raise TemplateError(f"Parameter '{name}' must match pattern {pattern}")
    if "MinLength" in spec and len(value) < int(spec["MinLength"]):
        raise TemplateError(f"Parameter '{name}' must be at least {spec['MinLength']} characters long")
    if "MaxLength" in spec and len(value) > int(spec["MaxLength"]):
        raise TemplateError(f"Parameter '{name}' must be at most {spec['MaxLength']} characters long")
    if kind == "Number":
        try:
            number = float(value)
        except ValueError:
            raise TemplateError(f"Parameter '{name}' must be a number, got {value!r}") from None
        if "MinValue" in spec and number < float(spec["MinValue"]):
            raise TemplateError(f"Parameter '{name}' must be >= {spec['MinValue']}, got {value}")
        if "MaxValue" in spec and number > float(spec["MaxValue"]):
            raise TemplateError(f"Parameter '{name}' must be <= {spec['MaxValue']}, got {value}")
    return value


def _scalar_text(value: Any) -> str:
    """CloudFormation hands every scalar around as a string; YAML booleans become true/false."""
    if isinstance(value, bool):
        return "true" if value else "false"
    return str(value)


# --------------------------------------------------------------------------- dependencies
def dependencies(value: Any, resource_names: set[str]) -> set[str]:
    """Logical ids of resources that `value` references (Ref, GetAtt, Sub variables)."""
    found: set[str] = set()

    def visit(node: Any) -> None:
        if isinstance(node, list):
            for item in node:
                visit(item)
        elif isinstance(node, dict):
            if len(node) == 1 and "Ref" in node and isinstance(node["Ref"], str):
                found.add(node["Ref"])
            elif len(node) == 1 and "Fn::GetAtt" in node:
                target = node["Fn::GetAtt"]
                found.add(target[0] if isinstance(target, list) else str(target).split(".", 1)[0])
            elif len(node) == 1 and "Fn::Sub" in node:
                arg = node["Fn::Sub"]
                text, variables = (
                    (arg, {}) if isinstance(arg, str) else (arg[0], arg[1] if len(arg) > 1 else {})
                )
                visit(variables)
                for name in _SUB_VARIABLE.findall(text):
                    if not name.startswith("!") and name not in variables:
                        found.add(name.split(".", 1)[0])
            else:
                for item in node.values():
                    visit(item)

    visit(value)
    return found & resource_names


def creation_order(resources: Mapping[str, Any]) -> list[str]:
    """Resources sorted so that everything a resource references is created before it."""
    names = set(resources)
    needs: dict[str, set[str]] = {}
    for name, resource in resources.items():
        depends_on = resource.get("DependsOn", [])
        depends_on = [depends_on] if isinstance(depends_on, str) else list(depends_on)
        missing = [d for d in depends_on if d not in names]
        if missing:
            raise TemplateError(f"{name}: DependsOn names unknown resources {missing}")
        needs[name] = (dependencies(resource.get("Properties", {}), names) | set(depends_on)) - {name}
    order: list[str] = []
    remaining = dict(needs)
    while remaining:
        ready = [n for n in resources if n in remaining and not (remaining[n] - set(order))]
        if not ready:
            raise TemplateError(f"Circular dependency between resources: {sorted(remaining)}")
        for name in ready:
            order.append(name)
            del remaining[name]
    return order


# --------------------------------------------------------------------------- resolver
class Resolver:
    """Evaluates intrinsic functions against parameters, pseudo parameters and created resources."""

    def __init__(
        self,
        template: dict[str, Any],
        parameters: Mapping[str, Any],
        pseudo: Mapping[str, str],
        resource_names: set[str],
    ) -> None:
        self.template = template
        self.parameters = dict(parameters)
        self.pseudo = dict(pseudo)
        self.resource_names = resource_names
        self.refs: dict[str, Any] = {}  # logical id -> what Ref returns
        self.attributes: dict[str, dict[str, Any]] = {}  # logical id -> GetAtt attributes
        self._conditions: dict[str, bool] = {}

    # conditions -------------------------------------------------------------
    def condition(self, name: str) -> bool:
        if name not in self._conditions:
            declared = self.template.get("Conditions", {}) or {}
            if name not in declared:
                raise TemplateError(f"Unknown condition '{name}'")
            self._conditions[name] = self._truth(self.resolve(declared[name]), f"condition {name}")
        return self._conditions[name]

    @staticmethod
    def _truth(value: Any, where: str) -> bool:
        if isinstance(value, bool):
            return value
        if isinstance(value, str) and value in ("true", "false"):
            return value == "true"
        raise TemplateError(f"{where} does not evaluate to a boolean: {value!r}")

    # resolution -------------------------------------------------------------
    def resolve(self, value: Any) -> Any:
        if isinstance(value, list):
            items = [self.resolve(v) for v in value]
            return [v for v in items if v is not NO_VALUE]
        if not isinstance(value, dict):
            return value
        if len(value) == 1:
            key, arg = next(iter(value.items()))
            if key == "Ref":
                return self.ref(arg)
            if key == "Condition" and isinstance(arg, str):
                return self.condition(arg)
            if key.startswith("Fn::"):
                return self._function(key, arg)
        resolved = {k: self.resolve(v) for k, v in value.items()}
        return {k: v for k, v in resolved.items() if v is not NO_VALUE}

    def ref(self, name: str) -> Any:
        if name == "AWS::NoValue":
            return NO_VALUE
        if name in self.pseudo:
            return self.pseudo[name]
        if name in self.parameters:
            return self.parameters[name]
        if name in self.refs:
            return self.refs[name]
        if name in self.resource_names:
            raise TemplateError(f"Ref to resource '{name}' that is not created (skipped by its Condition?)")
        raise TemplateError(
            f"Unresolvable Ref '{name}': no parameter, pseudo parameter or resource of that name"
        )

    def get_att(self, name: str, attribute: str) -> Any:
        if name not in self.resource_names:
            raise TemplateError(f"Fn::GetAtt on unknown resource '{name}'")
        attributes = self.attributes.get(name)
        if attributes is None:
            raise TemplateError(f"Fn::GetAtt {name}.{attribute}: the resource is not created")
        if attribute not in attributes:
            raise TemplateError(
                f"Fn::GetAtt {name}.{attribute}: unknown attribute (known: {sorted(attributes)})"
            )
        return attributes[attribute]

    def _function(self, key: str, arg: Any) -> Any:  # one branch per intrinsic
        if key == "Fn::GetAtt":
            name, attribute = arg if isinstance(arg, list) else str(arg).split(".", 1)
            return self.get_att(name, self.resolve(attribute))
        if key == "Fn::Sub":
            return self._sub(arg)
        if key == "Fn::Join":
            delimiter, items = arg
            return self.resolve(delimiter).join(_scalar_text(i) for i in self.resolve(items))
        if key == "Fn::Split":
            delimiter, text = self.resolve(arg)
            return str(text).split(delimiter)
        if key == "Fn::Select":
            index, items = self.resolve(arg)
            try:
                return items[int(index)]
            except (IndexError, ValueError) as error:
                raise TemplateError(f"Fn::Select {index} of {items}: {error}") from None
        if key == "Fn::If":
            condition, if_true, if_false = arg
            return self.resolve(if_true if self.condition(condition) else if_false)
        if key == "Fn::Equals":
            left, right = self.resolve(arg)
            return _scalar_text(left) == _scalar_text(right)
        if key == "Fn::Not":
            return not self._truth(self.resolve(arg[0]), "Fn::Not")
        if key == "Fn::And":
            return all(self._truth(v, "Fn::And") for v in self.resolve(arg))
        if key == "Fn::Or":
            return any(self._truth(v, "Fn::Or") for v in self.resolve(arg))
        if key == "Fn::FindInMap":
            map_name, top, second = self.resolve(arg)
            try:
                return self.template["Mappings"][map_name][top][second]
            except KeyError:
                raise TemplateError(f"Fn::FindInMap {map_name}/{top}/{second}: not found") from None
        if key == "Fn::Base64":
            return base64.b64encode(str(self.resolve(arg)).encode()).decode()
        if key == "Fn::GetAZs":
            return [f"{REGION}{zone}" for zone in "abcdef"]
        if key == "Fn::ToJsonString":
            return json.dumps(self.resolve(arg), separators=(",", ":"))
        raise TemplateError(f"{key} is not supported by the one-machine stack")

    def _sub(self, arg: Any) -> str:
        local_vars: dict[str, Any]
        if isinstance(arg, str):
            text, local_vars = arg, {}
        else:  # [text, {name: value}]
            text, local_vars = arg[0], self.resolve(arg[1]) if len(arg) > 1 else {}

        def replace(match: re.Match[str]) -> str:
            name = match.group(1)
            if name.startswith("!"):  # ${!Literal} stays as ${Literal}
                return "${" + name[1:] + "}"
            if name in local_vars:
                return _scalar_text(local_vars[name])
            if "." in name and not name.startswith("AWS::"):
                resource, attribute = name.split(".", 1)
                return _scalar_text(self.get_att(resource, attribute))
            return _scalar_text(self.ref(name))

        return _SUB_VARIABLE.sub(replace, text)
