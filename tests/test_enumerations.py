"""Enumerations in a request and whether a call list covers them (`RouterConfig.cover_enumerations`)."""

import pytest

from conftest import finishing_sampler
from toolformer_router.enumerations import enumeration_open, enumeration_unfinished, find_enumerations


@pytest.mark.parametrize("text, expected", [
    ("What's the cost of 2 and 4 GB RAM machines on ec2?", (("2", "4"),)),
    ("interviewers for Python and Java", (("Python", "Java"),)),
    ("Weather in Boston, MA and New York, NY", (("Boston", "MA", "New York", "NY"),)),
    ("Translate 'hello' to French, German or Spanish.", (("French", "German", "Spanish"),)),
    ("What is 3.5 and 4.25?", (("3.5", "4.25"),)),
    ("What's the weather in Paris, France?", ()),  # no conjunction: a place, not a list
    ("check in on May 1, 2022, and out on May 5", ()),  # numbers of another kind's item
    ("Book a table for 2 and send it to Anna", ()),  # a number and a name are not one list
    ("version 1.2.3 and ec2", ()),
    ("I and A", ()),  # one-letter capitals are words, not names
    ("I'm in Los Gatos, CA, and I'm looking for a counselor", ()),  # "I'm" starts a clause, it names nothing
    ("logos of Superman, Iron Man, Hulk, and Batman. They are", (("Superman", "Iron Man", "Hulk", "Batman"),)),
])
def test_find_enumerations(text, expected):
    assert find_enumerations(text) == expected


def call(**arguments):
    return {"name": "f", "arguments": arguments}


def test_a_list_is_unfinished_while_an_enumeration_is_half_covered():
    cities = find_enumerations("weather in Paris, Rome and Oslo")
    assert enumeration_unfinished([call(city="Paris")], cities)
    assert enumeration_unfinished([call(city="Paris"), call(city="rome")], cities)
    assert not enumeration_unfinished([call(city="Paris"), call(city="Rome"), call(city="Oslo")], cities)
    assert not enumeration_unfinished([call(city="Paris"), call(city="Paris")], cities)  # nothing new: free to end
    assert not enumeration_unfinished([call(cities=["Paris", "Rome", "Oslo"])], cities)  # one call took them all
    assert not enumeration_unfinished([call(city="Berlin")], cities)  # took none: not this enumeration's list
    ids = find_enumerations("items with IDs ITM456 and ITM789")
    assert not enumeration_unfinished([call(items=["ITM456", "ITM789"])], ids)  # a word of "IDs ITM456" is taken
    radii = find_enumerations("circle areas for radius 5, 10 and 15")
    assert enumeration_unfinished([call(r=5)], radii) and enumeration_unfinished([call(r=5), call(r=10.0)], radii)
    assert not enumeration_unfinished([call(r=5), call(r=10.0), call(r="15")], radii)
    assert not enumeration_unfinished([call(a=48, b=36)], find_enumerations("the gcd of 36 and 48"))  # one call
    assert enumeration_unfinished([call(date="2022-05-01")], find_enumerations("on 1 and 2"))  # a string's numbers
    assert not enumeration_unfinished([], cities) and not enumeration_unfinished([call(city="Paris")], ())


def test_an_enumeration_is_open_while_some_items_are_taken_and_others_not():
    cities = find_enumerations("weather in Paris, Rome and Oslo")
    assert enumeration_open([call(city="Paris")], cities)
    assert enumeration_open([call(city="Paris"), call(city="Paris")], cities)  # a repeat does not close it
    assert not enumeration_open([call(city="Paris"), call(city="Rome"), call(city="Oslo")], cities)
    assert not enumeration_open([call(city="Berlin")], cities)  # took none: not this enumeration's list
    assert not enumeration_open([], cities) and not enumeration_open([call(city="Paris")], ())


def test_cover_enumerations_makes_one_call_per_item(make_router, tokenizer):
    router = make_router()
    tool = {"name": "get_weather", "description": "Weather of a city.",
            "parameters": {"type": "object", "properties": {"city": {"type": "string", "enum": ["Paris", "Rome"]}},
                           "required": ["city"]}}

    def counts(query):
        return [len(router.route(query, tools=[tool], tool_choice="required", max_new_tokens=80,
                                 logits_processor=finishing_sampler(tokenizer, seed)).calls) for seed in range(3)]

    assert counts("weather in Paris and Rome") == [1, 1, 1]  # the sampler favours "]" over ","
    router.config.cover_enumerations = True
    assert counts("weather in Paris and Rome") == [2, 2, 2]
    assert counts("weather in Paris or in Rome") == [1, 1, 1]  # no enumeration: unchanged
    results = [router.route("weather in Paris and Rome", tools=[tool], tool_choice="required", max_new_tokens=80,
                            logits_processor=finishing_sampler(tokenizer, 0), parallel_tool_calls=False)]
    assert [len(r.calls) for r in results] == [1]  # one call asked for: no list to go on with
