"""Why a JSONPath did not match an event: walk the parsed jsonpath2 expression step by step.

jsonpath2 answers only "these nodes matched". To say *why* nothing did, the
path is walked as jsonpath2 walks it (``SubscriptNode`` by ``SubscriptNode``,
``..`` as every descendant), keeping the set of nodes reached so far; the
first step that reaches nothing is the reason. A filter ``[?(...)]`` is
explained by evaluating its expression (and/or/not, comparisons, existence)
on the nodes it was tried on and naming the first clause that was false,
with the value the event actually had. Every yes/no comes from jsonpath2's
own ``match``/``evaluate`` or the router's ``path_matches`` (whose compiled
predicates answer as jsonpath2 does), so the explanation agrees with the router.
"""

from __future__ import annotations

from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from jsonpath2.node import Node
from jsonpath2.nodes.recursivedescent import RecursiveDescentNode
from jsonpath2.nodes.root import RootNode
from jsonpath2.nodes.subscript import SubscriptNode
from jsonpath2.nodes.terminal import TerminalNode
from jsonpath2.path import Path
from jsonpath2.subscripts.arrayindex import ArrayIndexSubscript
from jsonpath2.subscripts.filter import FilterSubscript
from jsonpath2.subscripts.objectindex import ObjectIndexSubscript
from jsonpath2.subscripts.wildcard import WildcardSubscript

from pacifica.dispatcher.history.clauses import (
    SHOWN_VALUES,
    Clause,
    describe,
    described,
    first_false,
    key_failure,
    nearest_miss,
    text_of,
)
from pacifica.dispatcher.router import path_matches


@dataclass(frozen=True)
class Explanation:
    """One event against one JSONPath: matched, or the first thing that failed and why.

    ``failed`` is the clause (``@["source"] = "x"``) or path step (``$["data"]``)
    that failed, the same for every event failing the same way (for grouping);
    ``reason`` says it with the values this event had.
    """

    matched: bool
    failed: str = ""
    reason: str = ""


MATCHED = Explanation(True)


def explain(path: Path, document: Any, detail: bool = True) -> Explanation:
    """Whether ``path`` matches ``document``, and if not the first step or clause that failed.

    Without ``detail`` only ``failed`` is filled in (no values quoted): enough to
    count events by reason, at about the cost of matching.
    """
    node: Node = path.root_node
    reached: list[Any] = [document]
    walked = "$"
    if isinstance(node, RootNode):
        node = node.next_node
    try:
        while not isinstance(node, TerminalNode):
            if isinstance(node, RecursiveDescentNode):
                reached = [d for value in reached for d in _descendants(value)]
                walked += ".."
                node = node.next_node
                continue
            if not isinstance(node, SubscriptNode):
                return _opaque(path, document, walked)
            found = _step(node, document, reached)
            step_text = walked + "[" + ",".join(text_of(s) for s in node.subscripts) + "]"
            if not found:
                return _step_failure(node, document, reached, walked, step_text, detail)
            reached, walked, node = found, step_text, node.next_node
    except Exception as exc:  # a JSONPath function applied to the wrong type raises
        if _matches(path, document):  # the router's answer decides, whatever went wrong here
            return MATCHED
        return Explanation(False, walked, f"evaluating {walked} raised {type(exc).__name__}: {exc}")
    return MATCHED


def _matches(path: Path, document: Any) -> bool:
    try:
        return path_matches(path, document)
    except Exception:  # as the router: an error is no match
        return False


def _opaque(path: Path, document: Any, walked: str) -> Explanation:
    if _matches(path, document):
        return MATCHED
    return Explanation(False, walked, f"{text_of(path)} found nothing")


def _descendants(value: Any) -> Iterator[Any]:
    yield value
    if isinstance(value, Mapping):
        children: Any = value.values()
    elif isinstance(value, Sequence) and not isinstance(value, str):
        children = value
    else:
        return
    for child in children:
        yield from _descendants(child)


def _step(node: SubscriptNode, root: Any, reached: list[Any]) -> list[Any]:
    found: list[Any] = []
    for subscript in node.subscripts:
        if isinstance(subscript, ObjectIndexSubscript):  # jsonpath2's rule, without its objects
            key = subscript.index
            found.extend(v[key] for v in reached if isinstance(v, Mapping) and key in v)
        elif isinstance(subscript, WildcardSubscript):
            for value in reached:
                if isinstance(value, Mapping):
                    found.extend(value.values())
                elif isinstance(value, Sequence) and not isinstance(value, str):
                    found.extend(value)
        elif isinstance(subscript, FilterSubscript):
            found.extend(v for v in reached if first_false(subscript.expression, root, v) is None)
        else:
            found.extend(m.current_value for v in reached for m in subscript.match(root, v))
    return found


def _step_failure(
    node: SubscriptNode, root: Any, reached: list[Any], walked: str, step_text: str, detail: bool
) -> Explanation:
    subscript = node.subscripts[0] if len(node.subscripts) == 1 else None
    if isinstance(subscript, FilterSubscript):
        return _filter_failure(subscript, root, reached, walked, step_text, detail)
    if not detail:
        return Explanation(False, step_text)
    if subscript is None:
        return Explanation(False, step_text, f"{step_text} found nothing at {walked}")
    if isinstance(subscript, ObjectIndexSubscript):
        why = key_failure(subscript.index, reached)
    elif isinstance(subscript, ArrayIndexSubscript):
        why = _index_failure(subscript.index, reached)
    elif isinstance(subscript, WildcardSubscript):
        why = "it is " + described(reached, empty=True)
    else:
        why = f"{text_of(subscript)} gave nothing on " + described(reached)
    return Explanation(False, step_text, f"{step_text} found nothing: at {walked}, {why}")


def _index_failure(index: int, reached: list[Any]) -> str:
    arrays = [v for v in reached if isinstance(v, Sequence) and not isinstance(v, str)]
    if not arrays:
        return f"there is {described(reached)}, not an array"
    sizes = sorted({len(a) for a in arrays})
    return f"no index {index}: the array has {', '.join(map(str, sizes))} element(s)"


def _filter_failure(
    subscript: FilterSubscript,
    root: Any,
    reached: list[Any],
    walked: str,
    step_text: str,
    detail: bool,
) -> Explanation:
    tried = [(value, first_false(subscript.expression, root, value)) for value in reached]
    failed = [(value, clause) for value, clause in tried if clause is not None]
    if not failed:  # evaluation disagreed with itself (not expected): say it plainly
        return Explanation(False, step_text, f"{step_text} found nothing" if detail else "")
    most = text_of(nearest_miss(subscript.expression, [clause for _, clause in failed]))
    if not detail:
        return Explanation(False, most)
    described = [describe(clause, root, value) for value, clause in failed]
    if len(reached) == 1:
        first = described[0]
        return Explanation(False, first.clause, f"{first.clause} was false: {first.why}")
    by_clause: dict[str, list[Clause]] = {}
    for clause in described:
        by_clause.setdefault(clause.clause, []).append(clause)
    parts = []
    for clause_text, group in sorted(by_clause.items(), key=lambda item: -len(item[1])):
        values = list(dict.fromkeys(v for c in group for v in c.actual))
        quoted = ", ".join(values[:SHOWN_VALUES]) + (", …" if len(values) > SHOWN_VALUES else "")
        seen = f" (values: {quoted})" if values else f" ({group[0].why})"
        mismatches = sorted({c.mismatch for c in group if c.mismatch})
        if mismatches:
            seen += f" ({'; '.join(mismatches)})"
        parts.append(f"{clause_text} was false for {len(group)}{seen}")
    inner = text_of(subscript.expression)
    return Explanation(
        False,
        most,
        f"{walked} has no element with {inner}: of {len(reached)} element(s), " + "; ".join(parts),
    )
