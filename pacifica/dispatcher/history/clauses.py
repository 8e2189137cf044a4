"""The clauses of a JSONPath filter: which one was false on a node, and why, in words.

``first_false`` decides as jsonpath2 does (a comparison holds when any pair of
operand values compares true), looking object keys up directly when an
operand is a plain ``@["a"]["b"]`` chain (jsonpath2's generators cost more
than the lookups) and asking jsonpath2 otherwise. ``describe`` then quotes
the values the node had, for the events that are shown.
"""

from __future__ import annotations

import json
from collections import Counter
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from jsonpath2.expressions.operator import (
    AndVariadicOperatorExpression,
    BinaryOperatorExpression,
    NotUnaryOperatorExpression,
    OrVariadicOperatorExpression,
)
from jsonpath2.expressions.some import SomeExpression
from jsonpath2.node import Node
from jsonpath2.nodes.current import CurrentNode
from jsonpath2.nodes.root import RootNode
from jsonpath2.nodes.subscript import SubscriptNode
from jsonpath2.nodes.terminal import TerminalNode
from jsonpath2.subscripts.objectindex import ObjectIndexSubscript

SHOWN_VALUES = 5  # distinct values quoted when many nodes failed the same clause
SHOWN_TEXT = 80  # characters of one quoted value


@dataclass(frozen=True)
class Clause:
    """A false clause and why, on one node."""

    clause: str
    why: str
    actual: tuple[str, ...] = ()  # the values the node had, as shown
    mismatch: str = ""  # a type mismatch that explains it (``a number, not a string``)


_TEXTS: dict[int, tuple[Any, str]] = {}  # id(part) -> (part, text); the part is kept alive


def text_of(part: Any) -> str:
    """The JSONPath text of a parse-tree part (a node, subscript or expression).

    Cached by identity (jsonpath2's parts are unhashable); holding the part
    keeps its id from being reused while the entry exists.
    """
    cached = _TEXTS.get(id(part))
    if cached is not None and cached[0] is part:
        return cached[1]
    if len(_TEXTS) > 4096:
        _TEXTS.clear()
    text = "".join(part.__jsonpath__())
    _TEXTS[id(part)] = (part, text)
    return text


def shown(value: Any) -> str:
    """A value as JSON, cut to ``SHOWN_TEXT`` characters."""
    try:
        text = json.dumps(value, ensure_ascii=False, sort_keys=True)
    except (TypeError, ValueError):
        text = repr(value)
    return text if len(text) <= SHOWN_TEXT else text[: SHOWN_TEXT - 1] + "…"


def kind_of(value: Any) -> str:
    """The JSON type of a value, in words."""
    if value is None:
        return "null"
    if isinstance(value, bool):
        return "a boolean"
    if isinstance(value, (int, float)):
        return "a number"
    if isinstance(value, str):
        return "a string"
    if isinstance(value, Mapping):
        return "an object"
    return "an array" if isinstance(value, Sequence) else type(value).__name__


def described(values: list[Any], empty: bool = False) -> str:
    kinds = Counter(
        (f"an empty {kind_of(v)[3:]}" if empty and kind_of(v) in ("an object", "an array") else "")
        or (
            f"{kind_of(v)} {shown(v)}"
            if kind_of(v) not in ("an object", "an array")
            else kind_of(v)
        )
        for v in values
    )
    return ", ".join(k if n == 1 else f"{k} ({n} nodes)" for k, n in kinds.most_common(3))


def key_failure(key: str, reached: list[Any]) -> str:
    objects = [v for v in reached if isinstance(v, Mapping)]
    if not objects:
        return f"there is {described(reached)}, not an object with key {shown(key)}"
    keys = sorted({str(k) for v in objects for k in v})
    listed = ", ".join(shown(k) for k in keys[:10]) + (", …" if len(keys) > 10 else "")
    return f"there is no key {shown(key)} (keys: {listed or 'none'})"


def first_false(expression: Any, root: Any, current: Any) -> Any | None:
    """None when the filter expression holds on ``current``; otherwise the first false clause
    (a comparison, an existence test, a ``not``, or an ``or`` none of whose branches held)."""
    if isinstance(expression, AndVariadicOperatorExpression):
        for part in expression.expressions:
            failed = first_false(part, root, current)
            if failed is not None:
                return failed
        return None
    if isinstance(expression, OrVariadicOperatorExpression):
        if any(first_false(p, root, current) is None for p in expression.expressions):
            return None
        return expression
    holds = _holds_directly(expression, root, current)
    if holds is None:
        holds = expression.evaluate(root, current)
    return None if holds else expression


def _holds_directly(expression: Any, root: Any, current: Any) -> bool | None:
    """A comparison's or existence test's answer by plain lookups; None if it needs jsonpath2."""
    if isinstance(expression, BinaryOperatorExpression):
        left = _direct(expression.left_node_or_value, root, current)
        right = _direct(expression.right_node_or_value, root, current)
        if left is not None and right is not None:  # jsonpath2's rule: any pair compares true
            return any(expression.callback(a, b) for a in left for b in right)
    if isinstance(expression, SomeExpression) and isinstance(expression.next_node_or_value, Node):
        values = _direct(expression.next_node_or_value, root, current)
        if values is not None:
            return bool(values)
    return None


def _order(expression: Any) -> list[Any]:
    """The clauses of a filter expression in reading order (parents before their parts)."""
    parts = getattr(expression, "expressions", None) or (
        [expression.expression] if isinstance(expression, NotUnaryOperatorExpression) else []
    )
    return [expression, *(c for part in parts for c in _order(part))]


def nearest_miss(expression: Any, clauses: list[Any]) -> Any:
    """Of the clauses that failed on different elements, the one latest in reading order:
    the element that got furthest through an ``and`` is the one that nearly matched."""
    order = {id(c): n for n, c in enumerate(_order(expression))}
    return max(clauses, key=lambda c: order.get(id(c), -1))


_CHAINS: dict[int, tuple[Any, tuple[str, ...] | None]] = {}  # id(operand) -> (operand, keys)


def _keys_of(operand: Node) -> tuple[str, ...] | None:
    """The object keys of ``@["a"]["b"]`` (or ``$[...]``); None for any other operand path."""
    cached = _CHAINS.get(id(operand))
    if cached is not None and cached[0] is operand:
        return cached[1]
    keys: list[str] | None = []
    node = operand.next_node
    while isinstance(node, SubscriptNode) and keys is not None:
        only = node.subscripts[0] if len(node.subscripts) == 1 else None
        keys = [*keys, only.index] if isinstance(only, ObjectIndexSubscript) else None
        node = node.next_node
    found = tuple(keys) if keys is not None and isinstance(node, TerminalNode) else None
    if len(_CHAINS) > 4096:
        _CHAINS.clear()
    _CHAINS[id(operand)] = (operand, found)
    return found


def _direct(operand: Any, root: Any, current: Any) -> list[Any] | None:
    """An operand's values by plain lookups (a literal, or a chain of object keys from ``@``
    or ``$``); None when jsonpath2 has to evaluate it."""
    if not isinstance(operand, Node):
        return [operand]
    if not isinstance(operand, (CurrentNode, RootNode)):
        return None
    keys = _keys_of(operand)
    if keys is None:
        return None
    value = current if isinstance(operand, CurrentNode) else root
    for key in keys:
        if not isinstance(value, Mapping) or key not in value:
            return []
        value = value[key]
    return [value]


def describe(clause: Any, root: Any, current: Any) -> Clause:
    """Why a clause ``first_false`` returned was false on ``current``, with the values it saw."""
    if isinstance(clause, OrVariadicOperatorExpression):
        failures = [
            describe(failed, root, current)
            for failed in (first_false(p, root, current) for p in clause.expressions)
            if failed is not None
        ]
        whys = "; ".join(f"{f.clause}: {f.why}" for f in failures)
        actual = tuple(v for f in failures for v in f.actual)
        return Clause(text_of(clause), f"no alternative held ({whys})", actual)
    if isinstance(clause, NotUnaryOperatorExpression):
        inner = text_of(clause.expression)
        values = _values_in(clause.expression, root, current)
        holds = f"{inner} holds" + (f" ({inner} is {' and '.join(values)})" if values else "")
        return Clause(text_of(clause), holds, values)
    if isinstance(clause, BinaryOperatorExpression):
        return _comparison_failure(clause, root, current)
    if isinstance(clause, SomeExpression):
        operand = clause.next_node_or_value
        if isinstance(operand, Node):
            return Clause(text_of(clause), missing(operand, root, current))
        return Clause(text_of(clause), f"{text_of(clause)} is false")
    return Clause(text_of(clause), "it evaluated to false")


def _operand_values(operand: Any, root: Any, current: Any) -> list[Any] | None:
    """The values an operand stands for: its matches for a node, None for a literal."""
    if not isinstance(operand, Node):
        return None
    return [m.current_value for m in operand.match(root, current)]


def _values_in(expression: Any, root: Any, current: Any) -> tuple[str, ...]:
    operands: tuple[Any, ...] = ()
    if isinstance(expression, BinaryOperatorExpression):
        operands = (expression.left_node_or_value, expression.right_node_or_value)
    elif isinstance(expression, SomeExpression):
        operands = (expression.next_node_or_value,)
    if operands:
        for operand in operands:
            values = _operand_values(operand, root, current)
            if values:
                return tuple(shown(v) for v in values)
    return ()


def _comparison_failure(expression: BinaryOperatorExpression, root: Any, current: Any) -> Clause:
    clause = text_of(expression)
    left, right = expression.left_node_or_value, expression.right_node_or_value
    reasons: list[str] = []
    actual: list[str] = []
    mismatch = ""
    for operand, other in ((left, right), (right, left)):
        values = _operand_values(operand, root, current)
        if values is None:
            continue
        if not values:
            reasons.append(missing(operand, root, current))
            continue
        actual.extend(shown(v) for v in values)
        mismatch = mismatch or _mismatch(values, other, expression.token)
        listed = " and ".join(shown(v) for v in values[:SHOWN_VALUES])
        reasons.append(f"{text_of(operand)} is {listed}" + (f" ({mismatch})" if mismatch else ""))
    why = "; ".join(reasons) or "the two literals differ"
    return Clause(clause, why, tuple(actual), mismatch)


def _mismatch(values: list[Any], other: Any, token: str) -> str:
    """The type mismatch that makes a comparison false, if that is what it is."""
    value_kinds = {kind_of(v) for v in values}
    if token in ("<", "<=", ">", ">=") and value_kinds - {"a number"}:
        return f"{', '.join(sorted(value_kinds))}; {token} compares numbers only"
    if not isinstance(other, Node) and token in ("=", "!=") and kind_of(other) not in value_kinds:
        return f"{', '.join(sorted(value_kinds))}, not {kind_of(other)}"
    return ""


def missing(operand: Node, root: Any, current: Any) -> str:
    """Why an operand path found nothing, in the words ``explain`` uses for path steps."""
    start = root if isinstance(operand, RootNode) else current
    node = getattr(operand, "next_node", None)
    reached, walked = [start], "$" if isinstance(operand, RootNode) else "@"
    while isinstance(node, SubscriptNode):
        found = [
            m.current_value for s in node.subscripts for v in reached for m in s.match(root, v)
        ]
        step_text = walked + "[" + ",".join(text_of(s) for s in node.subscripts) + "]"
        if not found:
            subscript = node.subscripts[0]
            if isinstance(subscript, ObjectIndexSubscript):
                return f"{step_text} is missing: {key_failure(subscript.index, reached)}"
            return f"{step_text} found nothing"
        reached, walked, node = found, step_text, node.next_node
    return f"{text_of(operand)} found nothing"
