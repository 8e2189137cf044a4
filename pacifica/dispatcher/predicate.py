"""A parsed JSONPath compiled to a Python predicate: "does it match this document at least once".

jsonpath2 interprets a path by building generators and ``MatchData`` objects
for every node it visits; the predicate answers the same question with plain
closures, dict lookups and loops. It reproduces jsonpath2's semantics
exactly, including its quirks: nodes are visited in the same (document)
order and the first match stops the walk, so an error jsonpath2 would raise
before its first match is raised here too (``[::0]`` on an array); a
comparison holds when some pair of operand values compares true, but when
the right operand is a path jsonpath2 consumes its values on the *first* left
value only; ``<``/``>`` hold between numbers only (booleans count as
numbers); ``=`` is Python's ``==`` (``1 = 1.0 = true``).

Only paths whose cost is bounded by the size of the path times the size of
the document are compiled: single subscripts (keys, indexes, ``*``, slices,
filters) without ``..``, filters of and/or/not, comparisons and existence
tests, with ``@`` operands of any such chain and ``$`` operands of keys and
indexes only. Anything else (``..``, unions, functions, ``$`` operands that
fan out) gives None, and the caller asks jsonpath2 itself (``path_matches``
does), which is never a different answer.
"""

from __future__ import annotations

import bisect
import operator
from collections.abc import Callable, Iterable, Iterator, Mapping, Sequence
from typing import Any

from jsonpath2.expressions.operator import (
    AndVariadicOperatorExpression,
    BinaryOperatorExpression,
    EqualBinaryOperatorExpression,
    GreaterThanBinaryOperatorExpression,
    GreaterThanOrEqualToBinaryOperatorExpression,
    LessThanBinaryOperatorExpression,
    LessThanOrEqualToBinaryOperatorExpression,
    NotEqualBinaryOperatorExpression,
    NotUnaryOperatorExpression,
    OrVariadicOperatorExpression,
)
from jsonpath2.expressions.some import SomeExpression
from jsonpath2.node import Node
from jsonpath2.nodes.current import CurrentNode
from jsonpath2.nodes.root import RootNode
from jsonpath2.nodes.subscript import SubscriptNode
from jsonpath2.nodes.terminal import TerminalNode
from jsonpath2.path import Path
from jsonpath2.subscripts.arrayindex import ArrayIndexSubscript
from jsonpath2.subscripts.arrayslice import ArraySliceSubscript
from jsonpath2.subscripts.filter import FilterSubscript
from jsonpath2.subscripts.objectindex import ObjectIndexSubscript
from jsonpath2.subscripts.wildcard import WildcardSubscript

Predicate = Callable[[Any], bool]
Test = Callable[[Any, Any], bool]  # (root, current) -> bool
Step = Callable[[Any, Any], Iterable[Any]]  # (root, current) -> the nodes one subscript reaches
Values = Callable[[Any, Any], Iterator[Any]]
Getter = Callable[[Any, Any], Any]  # (root, current) -> the one value, or MISSING

MISSING: Any = object()
_CACHE: dict[int, tuple[Path, Predicate | None]] = {}  # id(path) -> (path, predicate)


class Unsupported(Exception):
    """A part of the path the compiler leaves to jsonpath2."""


def compile_predicate(path: Path) -> Predicate | None:
    """The predicate for ``path``, or None when jsonpath2 must evaluate it (see the module)."""
    try:
        exists = _exists(_steps(path.root_node.next_node))
    except Unsupported:
        return None
    return lambda document: exists(document, document)


def predicate_of(path: Path) -> Predicate | None:
    """``compile_predicate``, cached by identity (jsonpath2's paths are unhashable); holding
    the path keeps its id from being reused while the entry exists."""
    cached = _CACHE.get(id(path))
    if cached is not None and cached[0] is path:
        return cached[1]
    if len(_CACHE) > 4096:
        _CACHE.clear()
    predicate = compile_predicate(path)
    _CACHE[id(path)] = (path, predicate)
    return predicate


def interpret(path: Path, document: Any) -> bool:
    """jsonpath2's own answer (the reference the predicates reproduce): at least one match.

    Raises:
        Exception: whatever jsonpath2 raises before its first match.
    """
    return next(iter(path.match(document)), None) is not None


def is_object(value: Any) -> bool:
    """jsonpath2's test for an object (a ``Mapping``), fast for a ``dict``."""
    return type(value) is dict or isinstance(value, Mapping)


def is_array(value: Any) -> bool:
    """jsonpath2's test for an array (a ``Sequence`` that is not a string), fast for a ``list``."""
    return type(value) is list or (isinstance(value, Sequence) and not isinstance(value, str))


def _steps(node: Any) -> list[Any]:
    """The subscripts of a chain of single-subscript nodes ending the path."""
    found = []
    while isinstance(node, SubscriptNode):
        if len(node.subscripts) != 1:
            raise Unsupported("union")
        found.append(node.subscripts[0])
        node = node.next_node
    if not isinstance(node, TerminalNode):
        raise Unsupported(type(node).__name__)
    return found


def _singular(steps: list[Any]) -> bool:
    return all(isinstance(s, (ObjectIndexSubscript, ArrayIndexSubscript)) for s in steps)


def _exists(subscripts: list[Any]) -> Test:
    """True when the chain reaches at least one node from ``current``."""
    if not subscripts:
        return lambda root, current: True
    first, rest = subscripts[0], _exists(subscripts[1:])
    last = len(subscripts) == 1
    if isinstance(first, ObjectIndexSubscript):
        return _key_then(first.index, rest, last)
    if isinstance(first, FilterSubscript):
        test = _expression(first.expression)
        return test if last else (lambda root, current: test(root, current) and rest(root, current))
    step = _step(first)

    def walk(root: Any, current: Any) -> bool:
        for child in step(root, current):  # noqa: SIM110 (a loop is faster than any(generator))
            if rest(root, child):
                return True
        return False

    return walk


def _key_then(key: str, rest: Test, last: bool) -> Test:
    if last:
        return lambda root, current: is_object(current) and key in current

    def lookup(root: Any, current: Any) -> bool:
        if type(current) is dict:
            child = current.get(key, MISSING)
            return child is not MISSING and rest(root, child)
        return isinstance(current, Mapping) and key in current and rest(root, current[key])

    return lookup


def _values(subscripts: list[Any]) -> Values:
    """The nodes the chain reaches from ``current``, lazily, in jsonpath2's order."""
    if not subscripts:
        return lambda root, current: iter((current,))
    step, rest = _step(subscripts[0]), _values(subscripts[1:])

    def generate(root: Any, current: Any) -> Iterator[Any]:
        for child in step(root, current):
            yield from rest(root, child)

    return generate


def _getter(subscripts: list[Any]) -> Getter:
    """The one node a chain of keys and indexes reaches, or MISSING."""
    keys = [(isinstance(s, ObjectIndexSubscript), s.index) for s in subscripts]

    def get(root: Any, current: Any) -> Any:
        for is_key, index in keys:
            if is_key:
                if not (is_object(current) and index in current):
                    return MISSING
                current = current[index]
            else:
                found = _at(current, index)
                if not found:
                    return MISSING
                current = found[0]
        return current

    return get


def _step(subscript: Any) -> Step:
    if isinstance(subscript, ObjectIndexSubscript):
        return _key_step(subscript.index)
    if isinstance(subscript, ArrayIndexSubscript):
        return lambda root, current: _at(current, subscript.index)
    if isinstance(subscript, WildcardSubscript):
        return lambda root, current: _children(current)
    if isinstance(subscript, ArraySliceSubscript):
        start, end, step = subscript.start, subscript.end, subscript.step
        return lambda root, current: _sliced(current, start, end, step)
    if isinstance(subscript, FilterSubscript):
        test = _expression(subscript.expression)
        return lambda root, current: (current,) if test(root, current) else ()
    raise Unsupported(type(subscript).__name__)


def _key_step(key: str) -> Step:
    def step(root: Any, current: Any) -> tuple[Any, ...]:
        if is_object(current) and key in current:
            return (current[key],)
        return ()

    return step


def _at(current: Any, index: int) -> tuple[Any, ...]:
    """jsonpath2's ``ArrayIndexSubscript``: a negative index counts from the end."""
    if is_array(current):
        size = len(current)
        if index < 0:
            if 0 <= index + size < size:
                return (current[index + size],)
        elif index < size:
            return (current[index],)
    return ()


def _children(current: Any) -> Iterable[Any]:
    kind = type(current)  # the exact types first: an ABC check costs more than the walk
    if kind is list:
        return current  # type: ignore[no-any-return]
    if kind is dict or isinstance(current, Mapping):
        return current.values()  # type: ignore[no-any-return]
    if is_array(current):
        return current  # type: ignore[no-any-return]
    return ()


def _sliced(current: Any, start: int | None, end: int | None, step: int | None) -> Iterator[Any]:
    """jsonpath2's ``ArraySliceSubscript``: its index arithmetic, then each index as
    ``ArrayIndexSubscript`` takes it (indices out of range skipped without being tried), each
    element once."""
    if not is_array(current):
        return
    size = len(current)
    if start is not None and start < 0:
        start += size if abs(start) < size else abs(start)
    if end is not None and end < 0:
        end += size
    # Raises ValueError for a zero step, as jsonpath2 does.
    indices = range(start or 0, size if end is None else end, 1 if step is None else step)
    ascending = indices if indices.step > 0 else indices[::-1]
    kept = ascending[bisect.bisect_left(ascending, -size) : bisect.bisect_left(ascending, size)]
    # jsonpath2 may reach an element twice (as i and as i - size); the second visit gives
    # what the first gave, so it is skipped: chained slices would otherwise double the work
    # at every step.
    seen: set[int] = set()
    for index in kept if indices.step > 0 else kept[::-1]:
        position = index + size if index < 0 else index
        if position not in seen:
            seen.add(position)
            yield current[position]


def _expression(expression: Any) -> Test:
    """A filter expression as a test of (root, current)."""
    if isinstance(expression, AndVariadicOperatorExpression):
        parts = [_expression(part) for part in expression.expressions]
        if len(parts) == 2:
            a, b = parts
            return lambda root, current: a(root, current) and b(root, current)
        return lambda root, current: all(part(root, current) for part in parts)
    if isinstance(expression, OrVariadicOperatorExpression):
        parts = [_expression(part) for part in expression.expressions]
        return lambda root, current: any(part(root, current) for part in parts)
    if isinstance(expression, NotUnaryOperatorExpression):
        inner = _expression(expression.expression)
        return lambda root, current: not inner(root, current)
    if isinstance(expression, BinaryOperatorExpression):
        return _comparison(expression)
    if isinstance(expression, SomeExpression):
        return _some(expression.next_node_or_value)
    raise Unsupported(type(expression).__name__)


def _some(operand: Any) -> Test:
    if not isinstance(operand, Node):
        truth = bool(operand)
        return lambda root, current: truth
    from_root, subscripts = _operand(operand)
    exists = _exists(subscripts)
    if from_root:
        return lambda root, current: exists(root, root)
    return exists


def _operand(node: Any) -> tuple[bool, list[Any]]:
    """(starts at ``$``, its subscripts); ``$`` operands must be keys and indexes only, since
    they are evaluated again for every node the filter is tried on."""
    if not isinstance(node, (RootNode, CurrentNode)):
        raise Unsupported(type(node).__name__)
    subscripts = _steps(node.next_node)
    from_root = isinstance(node, RootNode)
    if from_root and not _singular(subscripts):
        raise Unsupported("a $ operand that fans out")
    return from_root, subscripts


_NUMERIC: dict[type, Callable[[Any, Any], bool]] = {
    LessThanBinaryOperatorExpression: operator.lt,
    LessThanOrEqualToBinaryOperatorExpression: operator.le,
    GreaterThanBinaryOperatorExpression: operator.gt,
    GreaterThanOrEqualToBinaryOperatorExpression: operator.ge,
}  # jsonpath2's numeric comparisons, which hold between numbers (int, float, bool) only
_MIRRORED = {operator.lt: operator.gt, operator.le: operator.ge}
_MIRRORED.update({v: k for k, v in _MIRRORED.items()})


def _callback(expression: BinaryOperatorExpression) -> Callable[[Any, Any], bool]:
    if isinstance(expression, EqualBinaryOperatorExpression):
        return operator.eq
    if isinstance(expression, NotEqualBinaryOperatorExpression):
        return operator.ne
    numeric: Callable[[Any, Any], bool] = expression.callback  # jsonpath2's own functions
    return numeric


def _comparison(expression: BinaryOperatorExpression) -> Test:
    callback = _callback(expression)
    left, right = expression.left_node_or_value, expression.right_node_or_value
    left_get, right_get = _one_value(left), _one_value(right)
    if left_get is not None and right_get is not None:
        if isinstance(left, Node) != isinstance(right, Node):  # a path against a literal
            literal_first = not isinstance(left, Node)
            get = right_get if literal_first else left_get
            return _literal_comparison(
                expression, get, right if not literal_first else left, literal_first
            )
        return _singular_comparison(callback, left_get, right_get)
    left_values, right_values = _all_values(left), _all_values(right)

    def compare(root: Any, current: Any) -> bool:
        # jsonpath2's loop: a path operand is a one-shot iterator, so a right-hand path is
        # consumed by the first left-hand value.
        lefts, rights = left_values(root, current), right_values(root, current)
        return any(callback(a, b) for a in lefts for b in rights)

    return compare


def _literal_comparison(
    expression: BinaryOperatorExpression, get: Getter, literal: Any, literal_first: bool
) -> Test:
    """The common ``@["key"] > 5``: one lookup, and the operator as a C function (a literal
    first is the same comparison mirrored: JSON values compare symmetrically)."""
    numeric = _NUMERIC.get(type(expression))
    if numeric is not None and not isinstance(literal, (int, float)):
        return lambda root, current: False  # jsonpath2 compares numbers only
    if numeric is not None and literal_first:
        numeric = _MIRRORED[numeric]
    operand = expression.right_node_or_value if literal_first else expression.left_node_or_value
    key = _current_key(operand)
    if key is not None:
        return _key_comparison(key, type(expression), numeric, literal)
    if numeric is not None:
        return lambda root, current: (
            isinstance(a := get(root, current), (int, float)) and numeric(a, literal)
        )
    equality = _callback(expression)
    return lambda root, current: (a := get(root, current)) is not MISSING and equality(a, literal)


def _current_key(operand: Any) -> str | None:
    """The key of an ``@["key"]`` operand; None for any other operand."""
    if isinstance(operand, CurrentNode) and isinstance(operand.next_node, SubscriptNode):
        node = operand.next_node
        if len(node.subscripts) == 1 and isinstance(node.next_node, TerminalNode):
            only = node.subscripts[0]
            return only.index if isinstance(only, ObjectIndexSubscript) else None
    return None


def _key_comparison(
    key: str, kind: type, numeric: Callable[[Any, Any], bool] | None, literal: Any
) -> Test:
    def value(current: Any) -> Any:
        return current[key] if isinstance(current, Mapping) and key in current else MISSING

    if numeric is not None:
        return lambda root, current: (
            isinstance(
                a := current.get(key) if type(current) is dict else value(current), (int, float)
            )
            and numeric(a, literal)
        )
    if kind is EqualBinaryOperatorExpression:  # MISSING equals no literal
        return lambda root, current: (
            (current.get(key, MISSING) if type(current) is dict else value(current)) == literal
        )
    return lambda root, current: (
        (a := current.get(key, MISSING) if type(current) is dict else value(current)) is not MISSING
        and a != literal
    )


def _singular_comparison(callback: Callable[[Any, Any], bool], left: Getter, right: Getter) -> Test:
    def compare(root: Any, current: Any) -> bool:
        a = left(root, current)
        if a is MISSING:
            return False
        b = right(root, current)
        return b is not MISSING and callback(a, b)

    return compare


def _one_value(operand: Any) -> Getter | None:
    """A getter for a literal or a path of keys and indexes; None for a path that fans out."""
    if not isinstance(operand, Node):
        return lambda root, current: operand
    from_root, subscripts = _operand(operand)
    if not _singular(subscripts):
        return None
    if len(subscripts) == 1 and isinstance(subscripts[0], ObjectIndexSubscript):
        key = subscripts[0].index

        def get_key(root: Any, current: Any) -> Any:
            start = root if from_root else current
            if type(start) is dict:
                return start.get(key, MISSING)
            return start[key] if isinstance(start, Mapping) and key in start else MISSING

        return get_key
    get = _getter(subscripts)
    return (lambda root, current: get(root, root)) if from_root else get


def _all_values(operand: Any) -> Callable[[Any, Any], Iterable[Any]]:
    """An operand's values as jsonpath2 iterates them: a list for a literal (read again for
    every left value), a one-shot iterator for a path."""
    if not isinstance(operand, Node):
        literal = [operand]
        return lambda root, current: literal
    from_root, subscripts = _operand(operand)
    generate = _values(subscripts)
    if from_root:
        return lambda root, current: generate(root, root)
    return generate
