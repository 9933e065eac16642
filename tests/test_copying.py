"""Copy bias: argument values that copy spans of the conversation (`toolformer_router.copying`)."""

import pytest

from toolformer_router.copying import SourceCopy, open_value
from toolformer_router.router import drop_repeats

CALL = '[{"name":"send_email","arguments":{'


@pytest.mark.parametrize("text, expected", [
    (CALL + '"to":"ann', ("string", "ann")),
    (CALL + '"to', None),  # a key, not a value
    (CALL + '"n":99', ("number", "99")),
    (CALL + '"n":', ("start", "")),  # a value not begun: a string or a number may start here
    (CALL + '"l":["a","b', ("string", "b")),  # an array member
    (CALL + '"l":[1, 2', ("number", "2")),
    (CALL + '"b":true', None),
    (CALL + '"a":"x","b":-1.5e', ("number", "-1.5e")),
    (CALL + '"o":{', None),  # a nested object's key comes next
    ('[{"name":"send_em', None),  # the call's name is no argument value
])
def test_open_value_finds_the_argument_value_a_call_list_ends_in(text, expected):
    assert open_value(text) == expected


def test_copying_tokens_go_on_with_a_span_of_the_request_and_close_it_only_at_the_request_end():
    texts = ["ann", "anna", "a", "@", "example", ".com", "Ex", '"', '",', "9", "99", "999", "1", "}", ",", "x"]
    copier = SourceCopy(texts)
    named = lambda ids: sorted(texts[i] for i in ids)  # noqa: E731
    source = "Email Anna@example.com that $999 is due"
    # a value not begun: every word start of the request, case-insensitively ("Anna" → "ann", "anna", "a")
    assert {"ann", "anna", "a", "example", "Ex"} <= set(named(copier.copying_tokens(CALL + '"to":"', source)))
    # "anna" so far: only "@" goes on
    assert named(copier.copying_tokens(CALL + '"to":"anna', source)) == ["@"]
    assert named(copier.copying_tokens(CALL + '"to":"anna@example', source)) == [".com"]
    # the whole address: the span goes on into " that"; the closing quotes are left to the model
    assert not {'"', '",'} & set(named(copier.copying_tokens(CALL + '"to":"anna@example.com', source)))
    assert copier.copying_tokens(CALL + '"to":"bob', source) == []  # no span of the request
    # a span that ends the request: nothing left to copy, so the closing quotes are favoured
    assert named(copier.copying_tokens(CALL + '"to":"is due', source)) == ['"', '",']
    # a value not begun: a number's first digits, or a quote alone or merged with a word start ('"Anna')
    texts += ['"ex', '"Anna', '"b']
    copier = SourceCopy(texts)
    assert named(copier.copying_tokens(CALL + '"amount":', source)) == ['"', '"Anna', '"ex', "9", "99", "999"]
    # numbers: the digits of "999" from its start; once whole, nothing is favoured (" is" follows)
    assert named(copier.copying_tokens(CALL + '"amount":99', source)) == ["9"]
    assert copier.copying_tokens(CALL + '"amount":999', source) == []
    assert copier.copying_tokens(CALL + '"to', source) == []  # keys are left to the model


def test_drop_repeats_keeps_the_first_of_each_identical_call():
    calls = [{"name": "f", "arguments": {"a": 1, "b": 2}}, {"name": "f", "arguments": {"b": 2, "a": 1}},
             {"name": "f", "arguments": {"a": 2, "b": 2}}, {"name": "g", "arguments": {"a": 1, "b": 2}}]
    assert drop_repeats(calls) == [calls[0], calls[2], calls[3]]
