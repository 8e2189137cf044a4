"""Compiled JSONPath predicates answer exactly as jsonpath2 does (issue 17).

Hypothesis generates JSONPaths from a grammar of what subscriptions and routes
use (keys in both notations, ``*``, indexes, slices, filters with
comparisons, existence tests, and/or/not, nested filters, ``$`` and ``@``
operands, every literal type) and JSON documents over the same keys, plus the
real Pacifica events in ``tests/test_files``; on every pair the compiled
predicate must give jsonpath2's answer, or raise where jsonpath2 raises.
"""

from __future__ import annotations

import json
import random
from pathlib import Path as FilePath
from typing import Any

import pytest
from hypothesis import HealthCheck, assume, given, settings
from hypothesis import strategies as st
from jsonpath2.path import Path

from benchmarks.bench_matching import events as bench_events
from benchmarks.bench_matching import subscription_paths
from pacifica.dispatcher.predicate import compile_predicate, interpret
from pacifica.dispatcher.router import parse_jsonpath, path_matches

FIXTURES = FilePath(__file__).parent.parent / "test_files"
KEYS = ["a", "b", "value", "destinationTable", "eventType", "data"]


def fixture_documents() -> list[Any]:
    found: list[Any] = []
    for name in sorted(FIXTURES.glob("*.json")):
        loaded = json.loads(name.read_text(encoding="utf-8"))
        found.extend(loaded if isinstance(loaded, list) else [loaded])
    return found


FIXTURE_DOCUMENTS = fixture_documents()

json_leaf = st.one_of(
    st.none(),
    st.booleans(),
    st.integers(-3, 3),
    st.sampled_from([0.0, 1.0, 2.5, -1.5]),
    st.sampled_from(["", "a", "x", "1", "Files", "true"]),
)
json_value = st.recursive(
    json_leaf,
    lambda children: st.one_of(
        st.lists(children, max_size=4),
        st.dictionaries(st.sampled_from(KEYS), children, max_size=4),
    ),
    max_leaves=20,
)
documents = st.one_of(json_value, st.sampled_from(FIXTURE_DOCUMENTS))

literals = st.sampled_from(
    ["0", "1", "-1", "2.5", "1.0", '"a"', '"x"', '"1"', '"Files"', "true", "false", "null"]
)
key_steps = st.sampled_from(KEYS).flatmap(lambda key: st.sampled_from([f'["{key}"]', f".{key}"]))
index_steps = st.integers(-3, 3).map(lambda n: f"[{n}]")
slice_bound = st.one_of(st.just(""), st.integers(-4, 4).map(str))
slice_steps = st.tuples(
    slice_bound, slice_bound, st.one_of(st.just(""), st.integers(-2, 2).map(str))
).map(lambda parts: f"[{parts[0]}:{parts[1]}" + (f":{parts[2]}]" if parts[2] else "]"))
plain_steps = st.one_of(
    key_steps, key_steps, st.sampled_from(["[*]", ".*"]), index_steps, slice_steps
)


def steps(filters: st.SearchStrategy[str], most: int) -> st.SearchStrategy[str]:
    return st.lists(st.one_of(plain_steps, filters), max_size=most).map("".join)


def expressions(depth: int) -> st.SearchStrategy[str]:
    inner = st.deferred(lambda: expressions(depth + 1))
    nested = inner.map(lambda e: f"[?({e})]") if depth < 2 else st.nothing()
    operand_path = st.tuples(st.sampled_from(["@", "@", "$"]), steps(nested, 3)).map("".join)
    operand = st.one_of(operand_path, literals)
    comparison = st.tuples(
        operand, st.sampled_from(["=", "!=", "<", "<=", ">", ">="]), operand
    ).map(" ".join)
    simple = st.one_of(comparison, comparison, operand_path)
    if depth >= 2:
        return simple
    return st.one_of(
        simple,
        st.tuples(inner, st.sampled_from(["and", "or"]), inner).map(" ".join),
        inner.map(lambda e: f"not ({e})"),
        inner.map(lambda e: f"({e})"),
    )


jsonpaths = steps(expressions(0).map(lambda e: f"[?({e})]"), 5).map(lambda s: "$" + s)


# Comparisons between paths that fan out, on small documents where they find several values.
def operand(fans_out: bool) -> st.SearchStrategy[str]:
    return st.builds(
        lambda start, first, then: start + first + then,
        st.sampled_from(["@"] if fans_out else ["@", "$"]),  # a $ path that fans out: jsonpath2
        st.sampled_from(['["a"]', '["b"]', ""] if fans_out else ['["a"]', '["b"]', "[0]"]),
        st.sampled_from(["[*]", "[1:]", "[-2:]"] if fans_out else ["", "[0]", "[-1]"]),
    )


any_operand = st.one_of(operand(True), operand(False), literals)
comparisons = st.one_of(
    st.tuples(operand(True), st.sampled_from(["=", "!=", "<", ">="]), any_operand),
    st.tuples(any_operand, st.sampled_from(["=", "!=", "<", ">="]), operand(True)),
).map(lambda parts: "$[?(" + " ".join(parts) + ")]")
small_value = st.one_of(st.integers(0, 1), st.lists(st.integers(0, 1), min_size=2, max_size=3))
small_object = st.fixed_dictionaries({"a": small_value, "b": small_value})
small_documents = st.one_of(small_object, st.lists(small_object, min_size=1, max_size=3))


def jsonpath2_answer(path: Path, document: Any) -> bool | str:
    try:
        return interpret(path, document)
    except Exception as exc:  # the compiled predicate must raise the same kind
        return type(exc).__name__


def compiled_answer(path: Path, document: Any) -> bool | str:
    predicate = compile_predicate(path)
    assert predicate is not None, f"{path} should compile"
    try:
        return predicate(document)
    except Exception as exc:
        return type(exc).__name__


GENERATED = settings(
    max_examples=500,
    derandomize=True,
    deadline=None,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.filter_too_much],
)


def assert_same_answer(text: str, document: Any) -> None:
    path = parse_jsonpath(text)
    if compile_predicate(path) is None:  # a $ operand that fans out: left to jsonpath2
        assume(False)
    assert compiled_answer(path, document) == jsonpath2_answer(path, document), text


@GENERATED
@given(text=jsonpaths, document=documents)
def test_compiled_predicates_answer_as_jsonpath2_does(text: str, document: Any) -> None:
    assert_same_answer(text, document)


@GENERATED
@given(text=comparisons, document=small_documents)
def test_comparisons_of_paths_with_several_values_answer_as_jsonpath2_does(
    text: str, document: Any
) -> None:
    assert_same_answer(text, document)


@pytest.mark.parametrize(
    "text",
    [
        '$["data"][*][?(@["destinationTable"] = "Files")]',
        '$[?(@["eventType"] = "org.pacifica.metadata.ingest")]["data"][*][?(@["value"] > 50)]',
        '$.data[?(@.mimetype = "text/plain" and not (@.size < 10))]',
        '$["data"][?(@["value"] = 54 or @["value"] = "1234a")]',
        '$["data"][-1:][?(@["destinationTable"] != "Files")]',
        '$["extensions"][?(@["a"])]',
        '$[?(@["data"][*]["value"] = 54)]',
        '$[?($["source"] = @["source"])]',
    ],
)
def test_pacifica_shaped_jsonpaths_compile_and_agree_on_every_fixture(text: str) -> None:
    path = parse_jsonpath(text)
    assert compile_predicate(path) is not None
    for document in FIXTURE_DOCUMENTS:
        assert compiled_answer(path, document) == jsonpath2_answer(path, document)


def test_the_benchmarks_subscriptions_agree_with_jsonpath2_on_its_events() -> None:
    texts = sorted(set(subscription_paths(400, random.Random(3), comparisons=0.2)))
    documents = bench_events(5, random.Random(4))
    for text in texts:
        path = parse_jsonpath(text)
        assert compile_predicate(path) is not None, text
        for document in documents:
            assert compiled_answer(path, document) == jsonpath2_answer(path, document), text


@pytest.mark.parametrize(
    ("text", "document", "expected"),
    [
        # A right-hand path is consumed by the first left-hand value: 2 is never compared.
        ('$[?(@["a"][*] = @["b"])]', {"a": [1, 2], "b": 2}, False),
        ('$[?(@["a"][*] = 2)]', {"a": [1, 2]}, True),  # a literal is compared with every value
        ('$[?(@["a"] > "1")]', {"a": 2}, False),  # < and > compare numbers only
        ('$[?(@["a"] > 0)]', {"a": True}, True),  # booleans are numbers
        ('$[?(@["a"] = 1)]', {"a": 1.0}, True),
        ('$["a"][::0]', {"a": [1]}, "ValueError"),  # jsonpath2's range() raises; so do we
        ('$["a"][::0]', {"a": "text"}, False),
        # The first match stops the walk, so an error after it is never reached; before it,
        # the error is the answer.
        ("$[*][?(not @[::0])]", [1, [2]], True),
        ("$[*][?(not @[::0])]", [[2], 1], "ValueError"),
    ],
)
def test_jsonpath2_quirks_are_kept(text: str, document: Any, expected: bool | str) -> None:
    path = parse_jsonpath(text)
    assert jsonpath2_answer(path, document) == expected
    assert compiled_answer(path, document) == expected


@pytest.mark.timeout(30)
def test_chained_slices_reach_each_element_once() -> None:
    # jsonpath2 reaches the one element of each array twice ([0] and [-1]): 2**40 walks here.
    text = "$" + "[0:-3:-1]" * 40 + '[?(@ = "never")]'
    document: Any = "leaf"
    for _ in range(40):
        document = [document]
    predicate = compile_predicate(parse_jsonpath(text))
    assert predicate is not None
    assert predicate(document) is False
    assert predicate(json.loads(json.dumps(document).replace('"leaf"', '"never"'))) is True


@pytest.mark.parametrize(
    "text", ['$..["a"]', '$["a","b"]', '$["a"].length()', '$[?(@["a"] = $[*]["b"])]']
)
def test_paths_outside_the_compiled_subset_are_left_to_jsonpath2(text: str) -> None:
    path = parse_jsonpath(text)
    assert compile_predicate(path) is None
    document = {"a": [{"a": 1}], "b": 2}
    assert path_matches(path, document) == jsonpath2_answer(path, document)
