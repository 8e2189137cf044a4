"""Matching events against many subscriptions: compile once, index by literal equalities.

A subscription's JSONPath matches an event when evaluating it yields at least
one node. Evaluating thousands of JSONPaths per event is slow, so each path is
read for *guards*: equalities ``@["key"] = literal`` that must hold for any
match, together with where they apply (the steps of object keys and ``*`` from
the root). Only conditions of filters along the path's leading chain of plain
steps count: AND-ed equalities, and OR-ed ones when every branch has one (then
one of them must hold); anything else (``not``, ``!=``, comparisons, unions,
recursive descent) yields nothing, which is always safe. Each subscription is
filed under its rarest condition (under every guard of an OR), or in an
always-evaluate bucket when it has none. For
an event, the index looks up the event's own (key, value) pairs at each step
sequence and evaluates only the subscriptions filed there, plus the bucket.
The result is the same set brute-force evaluation gives, because a guard is a
necessary condition of a match and candidates are then evaluated in full.

Candidates are evaluated by their compiled predicates (``predicate.py``), once
per distinct JSONPath and event. A path the compiler leaves to jsonpath2
(``..``, unions, functions) is interpreted within the evaluation budget; a
compiled one needs none, since its cost is bounded by the path's length times
the event's size.
"""

from __future__ import annotations

import logging
import math
import sys
import threading
import uuid as uuidlib
from collections import Counter, defaultdict
from collections.abc import Hashable, Iterable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

from jsonpath2.expressions.operator import (
    AndVariadicOperatorExpression,
    EqualBinaryOperatorExpression,
    OrVariadicOperatorExpression,
)
from jsonpath2.nodes.current import CurrentNode
from jsonpath2.nodes.root import RootNode
from jsonpath2.nodes.subscript import SubscriptNode
from jsonpath2.nodes.terminal import TerminalNode
from jsonpath2.path import Path
from jsonpath2.subscripts.filter import FilterSubscript
from jsonpath2.subscripts.objectindex import ObjectIndexSubscript
from jsonpath2.subscripts.wildcard import WildcardSubscript

from pacifica.dispatcher.errors import InvalidSubscriptionError, JSONPathBudgetError
from pacifica.dispatcher.predicate import Predicate, compile_predicate, interpret
from pacifica.dispatcher.router import path_matches
from pacifica.dispatcher.storage import subscriptions as stored
from pacifica.dispatcher.subscriptions.registry import compile_jsonpath

log = logging.getLogger(__name__)

WILDCARD = object()
DEFAULT_BUDGET = 1_000_000  # Python calls one JSONPath may make on one event (JSONPATH_BUDGET)
Steps = tuple[Any, ...]  # object keys (str) and WILDCARD, from the root


@dataclass(frozen=True)
class Guard:
    """A necessary condition: some node at ``steps`` is an object with ``key`` == ``value``."""

    steps: Steps
    key: str
    value: Hashable


def evaluate(path: Path, document: Any) -> bool:
    """True when ``path`` matches ``document`` at least once (upstream ``find``); errors count as no match."""
    try:
        return path_matches(path, document)
    except Exception:  # a JSONPath function applied to the wrong type raises
        log.debug("JSONPath %s raised on an event; taken as no match", path, exc_info=True)
        return False


def evaluate_within(path: Path, document: Any, budget: int | None) -> bool:
    """``evaluate`` with at most ``budget`` Python calls (generator steps included).

    jsonpath2 evaluates in pure Python, so counting calls measures the work a
    path does on a document the same way on every machine, and a trace
    function can stop it mid-way.

    Raises:
        JSONPathBudgetError: the evaluation needed more than ``budget`` calls.
    """
    if budget is None:
        return evaluate(path, document)
    calls = 0

    def count(frame: Any, event: str, arg: Any) -> None:
        nonlocal calls
        calls += 1
        if calls > budget:
            raise JSONPathBudgetError(f"JSONPath evaluation exceeded {budget} steps")

    previous = sys.gettrace()
    sys.settrace(count)
    try:
        return interpret(path, document)
    except JSONPathBudgetError:
        raise
    except Exception:  # as in ``evaluate``: a function applied to the wrong type
        return False
    finally:
        sys.settrace(previous)


Alternative = frozenset[Guard]  # a necessary condition: at least one of these guards holds


def guards(path: Path) -> list[Alternative]:
    """The necessary conditions of a compiled JSONPath (possibly none), AND-ed together."""
    found: list[Alternative] = []
    steps: Steps = ()
    node = path.root_node.next_node
    while isinstance(node, SubscriptNode) and len(node.subscripts) == 1:
        subscript = node.subscripts[0]
        if isinstance(subscript, ObjectIndexSubscript):
            steps = (*steps, subscript.index)
        elif isinstance(subscript, WildcardSubscript):
            steps = (*steps, WILDCARD)
        elif isinstance(subscript, FilterSubscript):
            found.extend(_alternatives(subscript.expression, steps))
        else:
            break
        node = node.next_node
    return found


def _alternatives(expression: Any, steps: Steps) -> list[Alternative]:
    if isinstance(expression, AndVariadicOperatorExpression):
        return [alt for part in expression.expressions for alt in _alternatives(part, steps)]
    if isinstance(expression, OrVariadicOperatorExpression):
        branches = [_alternatives(part, steps) for part in expression.expressions]
        if branches and all(branches):  # every branch constrained: one of them must hold
            return [frozenset().union(*(min(b, key=len) for b in branches))]
        return []
    if isinstance(expression, EqualBinaryOperatorExpression):
        left, right = expression.left_node_or_value, expression.right_node_or_value
        guard = _equality_guard(left, right, steps) or _equality_guard(right, left, steps)
        return [] if guard is None else [frozenset({guard})]
    return []


def _equality_guard(operand: Any, literal: Any, steps: Steps) -> Guard | None:
    if not _indexable(literal):
        return None
    if isinstance(operand, CurrentNode):
        base = steps
    elif isinstance(operand, RootNode):
        base = ()
    else:
        return None
    keys = _object_keys(operand.next_node)
    if not keys:
        return None
    return Guard((*base, *keys[:-1]), keys[-1], literal)


def _object_keys(node: Any) -> list[str]:
    keys = []
    while isinstance(node, SubscriptNode):
        if len(node.subscripts) != 1 or not isinstance(node.subscripts[0], ObjectIndexSubscript):
            return []
        keys.append(node.subscripts[0].index)
        node = node.next_node
    return keys if isinstance(node, TerminalNode) else []


def _indexable(value: Any) -> bool:
    # Equal values of these types hash equally, so a dict lookup finds exactly the == matches.
    if isinstance(value, float):
        return not math.isnan(value)
    return isinstance(value, (str, int, bool)) or value is None


def nodes_at(document: Any, steps: Steps) -> Iterator[Any]:
    """Every node reached from ``document`` by ``steps``, as jsonpath2 walks them."""
    if not steps:
        yield document
        return
    head, rest = steps[0], steps[1:]
    if head is WILDCARD:
        if isinstance(document, Mapping):
            children: Iterable[Any] = document.values()
        elif isinstance(document, Sequence) and not isinstance(document, str):
            children = document
        else:
            return
        for child in children:
            yield from nodes_at(child, rest)
    elif isinstance(document, Mapping) and head in document:
        yield from nodes_at(document[head], rest)


@dataclass(frozen=True)
class Candidate:
    """A subscription as the index sees it: its key, parsed path and predicate (None: the
    path is interpreted by jsonpath2, within the budget)."""

    key: str
    path: Path
    predicate: Predicate | None = None


def decide(predicate: Predicate, document: Any) -> bool:
    """A compiled predicate's answer, an error counting as no match (as ``evaluate``)."""
    try:
        return predicate(document)
    except Exception:  # the errors jsonpath2 raises too ([::0] on an array)
        log.debug("a compiled JSONPath raised on an event; taken as no match", exc_info=True)
        return False


@dataclass
class MatchIndex:
    """Subscriptions filed by their rarest guard; ``match`` gives the brute-force answer faster."""

    by_guard: dict[Steps, dict[tuple[str, Hashable], list[Candidate]]] = field(
        default_factory=lambda: defaultdict(lambda: defaultdict(list))
    )
    always: list[Candidate] = field(default_factory=list)
    size: int = 0

    @classmethod
    def build(
        cls,
        entries: Sequence[tuple[str, Path]],
        compiled: Mapping[int, Predicate | None] | None = None,
    ) -> MatchIndex:
        """Index (key, parsed path) pairs, each under its rarest necessary condition.

        ``compiled`` holds predicates already compiled, by ``id`` of the entries' paths;
        the others are compiled here, once per path object.
        """
        index = cls()
        found = [(key, path, guards(path)) for key, path in entries]
        frequency = Counter(g for _, _, alts in found for alt in set(alts) for g in alt)
        predicates = dict(compiled or {})  # by id(path): equal texts share one Path
        for key, path, alternatives in found:
            if id(path) not in predicates:
                predicates[id(path)] = compile_predicate(path)
            candidate = Candidate(key, path, predicates[id(path)])
            if not alternatives:
                index.always.append(candidate)
                continue
            rarest = min(alternatives, key=lambda alt: sum(frequency[g] for g in alt))
            for guard in rarest:
                index.by_guard[guard.steps][(guard.key, guard.value)].append(candidate)
        index.size = len(found)
        return index

    def candidates(self, document: Any) -> list[Candidate]:
        """The subscriptions that may match ``document`` (each once)."""
        chosen = list(self.always)
        for steps, table in self.by_guard.items():
            for node in nodes_at(document, steps):
                if not isinstance(node, Mapping):
                    continue
                for key, value in node.items():
                    if _indexable(value):
                        chosen.extend(table.get((key, value), ()))
        unique = {c.key: c for c in chosen}
        return list(unique.values())

    def match(
        self, document: Any, budget: int | None = None, over: list[str] | None = None
    ) -> list[str]:
        """Keys of the subscriptions whose JSONPath matches ``document``, sorted.

        With a ``budget``, a path that needs more steps counts as no match and
        its key is added to ``over``.
        """
        found = []
        answers: dict[int, bool] = {}  # by id(predicate): each distinct path once per event
        for candidate in self.candidates(document):
            predicate = candidate.predicate
            if predicate is not None:
                answer = answers.get(id(predicate))
                if answer is None:
                    answer = answers[id(predicate)] = decide(predicate, document)
                if answer:
                    found.append(candidate.key)
                continue
            try:
                if evaluate_within(candidate.path, document, budget):
                    found.append(candidate.key)
            except JSONPathBudgetError:
                if over is not None:
                    over.append(candidate.key)
        return sorted(found)


def brute_force(entries: Iterable[tuple[str, Path]], document: Any) -> list[str]:
    """Every path interpreted by jsonpath2: the reference answer the index must reproduce."""
    return sorted(key for key, path in entries if _interpreted(path, document))


def _interpreted(path: Path, document: Any) -> bool:
    try:
        return interpret(path, document)
    except Exception:  # as ``evaluate``
        return False


@dataclass
class Matcher:
    """Matches event documents against the active subscriptions, reloading when they change.

    One cheap query per event reads the revision counter; the index is rebuilt
    only when it moved, and JSONPaths already compiled are reused.
    """

    budget: int | None = DEFAULT_BUDGET
    revision: int | None = None
    index: MatchIndex = field(default_factory=MatchIndex)
    compiled: dict[str, tuple[Path, Predicate | None]] = field(default_factory=dict)
    lock: threading.Lock = field(default_factory=threading.Lock, repr=False)

    def refresh(self) -> None:
        """Rebuild the index if subscriptions changed since the last call."""
        revision = stored.revision()
        if revision == self.revision:
            return
        entries: list[tuple[str, Path]] = []
        compiled: dict[str, tuple[Path, Predicate | None]] = {}
        for key, text in stored.active_paths():
            known = compiled.get(text) or self.compiled.get(text)
            if known is None:
                try:
                    path = compile_jsonpath(text)
                except InvalidSubscriptionError:  # stored before validation got stricter
                    log.warning("subscription %s has an invalid JSONPath; it matches nothing", key)
                    continue
                known = (path, compile_predicate(path))
            compiled[text] = known
            entries.append((key, known[0]))
        index = MatchIndex.build(entries, {id(path): test for path, test in compiled.values()})
        with self.lock:
            self.index, self.compiled, self.revision = index, compiled, revision

    def match(self, document: Any) -> list[str]:
        """The ids of the active subscriptions whose JSONPath matches ``document``.

        A subscription whose JSONPath exceeds the evaluation budget on this
        event is disabled with the reason; the others keep matching.
        """
        self.refresh()
        over: list[str] = []
        found = self.index.match(document, self.budget, over)
        for key in over:
            reason = (
                f"disabled: its JSONPath needed more than {self.budget} evaluation steps on one "
                "event (JSONPATH_BUDGET); simplify it (fewer '..' and wildcards) and re-enable"
            )
            log.warning("subscription %s: JSONPath over budget; disabled", key)
            stored.disable_subscription(uuidlib.UUID(key), reason)
        return found
