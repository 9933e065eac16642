"""Everyday tools and the many ways people ask for them (training side, `source="everyday"`).

`EVERYDAY_TOOLS` are ~40 small tools of the kind agents carry (arithmetic, unit conversions, lookups, messaging,
scheduling, home and media, odds and ends), named in mixed styles, some with names that share no word with the
requests (`arith_sub` for "12 - 5?"). `EVERYDAY_TEMPLATES` holds, per tool, hand-written requests in varied
phrasings whose `{slots}` are filled from small value lists; each template states its gold arguments, only what
the request says. `everyday_examples` draws single-call, two-call and no-call examples among random other
everyday tools; `split_everyday` holds tools out for validation; `mask_names` hides every tool and parameter name
behind a random identifier (Hammer's function masking), so that a model must read the descriptions.

None of these tools is, or does the job of, one of the agent benchmark's ten tools (benchmarks/bench_agents.py):
no weather, currency conversion, addition, multiplication, email sending, stock price, order status, timer,
translation or calendar-event creation.
"""

from __future__ import annotations

import random
import re
import string
from collections.abc import Callable, Mapping, Sequence
from typing import Any

from .data import Example, GoldCall, call_errors, tool_dict

SOURCE = "everyday"
KIND_WEIGHTS = {"single": 0.70, "double": 0.15, "none": 0.15}
"""Share of each kind of example: one call, two calls of different tools, no call."""

Template = tuple[str, Mapping[str, Any]]
"""A request with `{slot}` fields and its gold arguments: a value `"{slot}"` (or `"{slot[part]}"`) takes the slot's
value, any other value is literal."""

_FORMATTER = string.Formatter()
_FIELD = re.compile(r"\{([^{}]+)\}")
_ALPHABET = string.ascii_lowercase + string.digits


def _p(type_: str, description: str, **extra: Any) -> dict[str, Any]:
    """One property schema."""
    return {"type": type_, "description": description, **extra}


def _tool(name: str, description: str, required: Sequence[str], **properties: dict[str, Any]) -> dict[str, Any]:
    """A tool in the unified (strict) format."""
    parameters = {"type": "object", "properties": properties, "required": list(required)}
    return tool_dict({"name": name, "description": description, "parameters": parameters})


_HHMM = "Time of day as HH:MM (24-hour)"
_DATE = "Date as YYYY-MM-DD"
_NUMBERS = (5, 12, 17, 42, 99, 150, 365, 1000, 2.5, 7.75, 1250, 88)
_TIMES = (("7am", "07:00"), ("6:30 am", "06:30"), ("5:45pm", "17:45"), ("21:00", "21:00"), ("noon", "12:00"),
          ("9 pm", "21:00"), ("08:15", "08:15"), ("10:30am", "10:30"))
_DATES = (("2026-03-14", "2026-03-14"), ("March 3, 2026", "2026-03-03"), ("June 21st 2026", "2026-06-21"),
          ("2026-11-02", "2026-11-02"), ("1 August 2026", "2026-08-01"), ("Dec 24 2026", "2026-12-24"))
_CITIES = ("Tokyo", "London", "New York", "Sydney", "Los Angeles", "Berlin", "Mumbai", "São Paulo", "Dubai",
           "Singapore", "Chicago", "Madrid")
_COUNTRIES = ("France", "Japan", "Brazil", "Nigeria", "Canada", "India", "Germany", "Mexico", "Australia", "Kenya",
              "South Korea", "Italy")
_YEARS = (1990, 2000, 2010, 2015, 2020, 2024)
_LENGTH_UNITS = ("mm", "cm", "m", "km", "in", "ft", "yd", "mi")
_LENGTH_SPOKEN = (("millimeters", "mm"), ("centimeters", "cm"), ("meters", "m"), ("kilometers", "km"),
                  ("inches", "in"), ("feet", "ft"), ("yards", "yd"), ("miles", "mi"))
_MASS_SPOKEN = (("grams", "g"), ("kilograms", "kg"), ("kg", "kg"), ("ounces", "oz"), ("pounds", "lb"), ("lbs", "lb"),
                ("stone", "st"))
_SCALES = (("Celsius", "celsius"), ("Fahrenheit", "fahrenheit"), ("Kelvin", "kelvin"))
_CURRENCY_CODES = ("USD", "EUR", "GBP", "JPY", "CHF", "CAD", "AUD", "INR", "MXN")
_CURRENCY_NAMES = (("the euro", "EUR"), ("the US dollar", "USD"), ("the yen", "JPY"), ("the pound", "GBP"),
                   ("the Swiss franc", "CHF"), ("the Indian rupee", "INR"), ("the Canadian dollar", "CAD"))
_PHONES = ("+1 415 555 0132", "+44 7700 900123", "555-0198", "+49 151 2345 6789", "(212) 555-0147")
_SHORT_MESSAGES = ("running 10 minutes late", "I'm outside", "call me when you're free", "happy birthday!",
                   "don't forget the milk", "the keys are under the mat")
_TEXTS = ("the quick brown fox jumps over the lazy dog", "To be or not to be, that is the question",
          "Dear team, the office will be closed on Monday.", "I came, I saw, I conquered",
          "Meet me at the north entrance after the show")
_ROOMS = ("kitchen", "living room", "bedroom", "hallway", "office", "bathroom")
_SONGS = ({"song": "Bohemian Rhapsody", "artist": "Queen"}, {"song": "Blinding Lights", "artist": "The Weeknd"},
          {"song": "Dancing Queen", "artist": "ABBA"}, {"song": "Hey Jude", "artist": "The Beatles"},
          {"song": "Clair de Lune", "artist": "Debussy"}, {"song": "Bad Guy", "artist": "Billie Eilish"})
_FOOTBALL = ("Arsenal", "Liverpool", "Chelsea", "Manchester United", "Tottenham")
_TEAMS = ("Real Madrid", "Bayern Munich", "Boston Celtics", "Golden State Warriors", "New York Yankees",
          "Chicago Cubs", "Arsenal", "Kansas City Chiefs")


def _entry(tool: dict[str, Any], slots: Mapping[str, Sequence[Any]], *templates: Template
           ) -> tuple[dict[str, Any], Mapping[str, Sequence[Any]], tuple[Template, ...]]:
    """A tool, its slot value lists (a value, a `(spoken, value)` pair or a dict of parts) and its templates."""
    return tool, slots, templates


_ENTRIES = (
    # ------------------------------------------------------------------ arithmetic
    _entry(_tool("arith_sub", "Subtract the second number from the first and return the difference.",
                 ["minuend", "subtrahend"], minuend=_p("number", "The number to subtract from"),
                 subtrahend=_p("number", "The number to take away")),
           {"a": _NUMBERS, "b": _NUMBERS},
           ("What is {a} minus {b}?", {"minuend": "{a}", "subtrahend": "{b}"}),
           ("{a} - {b}?", {"minuend": "{a}", "subtrahend": "{b}"}),
           ("subtract {b} from {a}", {"minuend": "{a}", "subtrahend": "{b}"}),
           ("what's {a} take away {b}", {"minuend": "{a}", "subtrahend": "{b}"}),
           ("Difference between {a} and {b}, please.", {"minuend": "{a}", "subtrahend": "{b}"}),
           ("I had {a} and gave away {b}. How many are left?", {"minuend": "{a}", "subtrahend": "{b}"}),
           ("calc {a}-{b}", {"minuend": "{a}", "subtrahend": "{b}"})),
    _entry(_tool("divide", "Divide one number by another, optionally rounding the quotient to some decimal places.",
                 ["dividend", "divisor"], dividend=_p("number", "The number to be divided"),
                 divisor=_p("number", "The number to divide by (not zero)"),
                 decimals=_p("integer", "Decimal places to round the result to", minimum=0, maximum=10)),
           {"a": _NUMBERS, "b": (2, 3, 4, 7, 8, 12, 16, 25), "d": (0, 1, 2, 3)},
           ("What's {a} divided by {b}?", {"dividend": "{a}", "divisor": "{b}"}),
           ("{a} / {b}", {"dividend": "{a}", "divisor": "{b}"}),
           ("divide {a} by {b}, round to {d} decimal places", {"dividend": "{a}", "divisor": "{b}", "decimals": "{d}"}),
           ("How many times does {b} go into {a}?", {"dividend": "{a}", "divisor": "{b}"}),
           ("We're splitting {a} into {b} equal parts. How much is each part?", {"dividend": "{a}", "divisor": "{b}"}),
           ("{a} ÷ {b} = ?", {"dividend": "{a}", "divisor": "{b}"})),
    _entry(_tool("calcPercentage", "Compute a given percentage of a number, e.g. 15 percent of 80.",
                 ["percent", "value"], percent=_p("number", "The percentage, e.g. 15 for 15%"),
                 value=_p("number", "The number to take the percentage of")),
           {"p": (5, 10, 12.5, 15, 20, 25, 33, 75), "v": (80, 120, 250, 999, 1500, 64, 48.5)},
           ("What is {p}% of {v}?", {"percent": "{p}", "value": "{v}"}),
           ("{p} percent of {v}", {"percent": "{p}", "value": "{v}"}),
           ("how much is {p} per cent of {v}", {"percent": "{p}", "value": "{v}"}),
           ("Calculate {p}% of {v} for me.", {"percent": "{p}", "value": "{v}"}),
           ("I got {p}% off a {v} dollar jacket, how much did I save?", {"percent": "{p}", "value": "{v}"}),
           ("whats {p}% of {v}", {"percent": "{p}", "value": "{v}"})),
    _entry(_tool("square_root", "Return the square root of a non-negative number.",
                 ["number"], number=_p("number", "The number, zero or more", minimum=0)),
           {"n": (2, 9, 16, 50, 81, 144, 200, 1024, 2.25)},
           ("What's the square root of {n}?", {"number": "{n}"}),
           ("sqrt({n})", {"number": "{n}"}),
           ("√{n}", {"number": "{n}"}),
           ("square root {n}", {"number": "{n}"}),
           ("Which number times itself gives {n}?", {"number": "{n}"})),
    _entry(_tool("raise_to_power", "Raise a base number to an exponent (base ** exponent).",
                 ["base", "exponent"], base=_p("number", "The number to raise"),
                 exponent=_p("number", "The power to raise it to")),
           {"b": (2, 3, 5, 10, 1.5, 7), "e": (2, 3, 4, 8, 10, 0.5),
            "o": (("3rd", 3), ("4th", 4), ("5th", 5), ("6th", 6), ("10th", 10))},
           ("What is {b} to the power of {e}?", {"base": "{b}", "exponent": "{e}"}),
           ("{b}^{e}", {"base": "{b}", "exponent": "{e}"}),
           ("{b} ** {e} = ?", {"base": "{b}", "exponent": "{e}"}),
           ("raise {b} to the {o} power", {"base": "{b}", "exponent": "{o}"}),
           ("what's {b} squared", {"base": "{b}", "exponent": 2}),
           ("{b} cubed?", {"base": "{b}", "exponent": 3})),
    _entry(_tool("compute_mean", "The arithmetic mean of a list of numbers.",
                 ["numbers"], numbers=_p("array", "The numbers to average", items={"type": "number"}, minItems=1)),
           {"xs": (("4, 8 and 15", [4, 8, 15]), ("10, 20, 30, 40", [10, 20, 30, 40]), ("3.5, 4 and 5", [3.5, 4, 5]),
                   ("88, 92, 79 and 95", [88, 92, 79, 95]), ("12 and 18", [12, 18]),
                   ("1, 2, 3, 4, 5, 6", [1, 2, 3, 4, 5, 6]))},
           ("What's the average of {xs}?", {"numbers": "{xs}"}),
           ("average {xs}", {"numbers": "{xs}"}),
           ("mean of {xs} pls", {"numbers": "{xs}"}),
           ("My test scores were {xs}. What's my average score?", {"numbers": "{xs}"}),
           ("Find the mean: {xs}", {"numbers": "{xs}"})),
    _entry(_tool("round_number", "Round a number to a given number of decimal places (a whole number by default).",
                 ["value"], value=_p("number", "The number to round"),
                 decimals=_p("integer", "How many decimal places to keep", minimum=0, maximum=10)),
           {"x": (3.14159, 2.71828, 19.999, 1234.5678, 0.3333, 7.5), "d": (0, 1, 2, 3)},
           ("Round {x} to {d} decimal places.", {"value": "{x}", "decimals": "{d}"}),
           ("round {x}", {"value": "{x}"}),
           ("What's {x} rounded to the nearest whole number?", {"value": "{x}", "decimals": 0}),
           ("{x} to {d} dp", {"value": "{x}", "decimals": "{d}"}),
           ("can you round off {x} to {d} decimals", {"value": "{x}", "decimals": "{d}"})),
    _entry(_tool("is_prime", "Check whether a whole number is a prime number.",
                 ["n"], n=_p("integer", "The whole number to test", minimum=0)),
           {"n": (7, 21, 97, 221, 1009, 7919, 1001, 561)},
           ("Is {n} prime?", {"n": "{n}"}),
           ("is {n} a prime number", {"n": "{n}"}),
           ("Check if {n} is prime.", {"n": "{n}"}),
           ("prime test: {n}", {"n": "{n}"}),
           ("can {n} be divided by anything except 1 and itself?", {"n": "{n}"})),
    # ------------------------------------------------------------------ unit conversions
    _entry(_tool("convert_length", "Convert a length or distance from one unit to another.",
                 ["value", "from_unit", "to_unit"], value=_p("number", "The length to convert"),
                 from_unit=_p("string", "Unit of the given length", enum=list(_LENGTH_UNITS)),
                 to_unit=_p("string", "Unit to convert to", enum=list(_LENGTH_UNITS))),
           {"v": (1, 2.5, 5, 10, 26.2, 100, 180, 5280), "u1": _LENGTH_SPOKEN, "u2": _LENGTH_SPOKEN},
           ("Convert {v} {u1} to {u2}.", {"value": "{v}", "from_unit": "{u1}", "to_unit": "{u2}"}),
           ("how many {u2} is {v} {u1}", {"value": "{v}", "from_unit": "{u1}", "to_unit": "{u2}"}),
           ("{v} {u1} in {u2}?", {"value": "{v}", "from_unit": "{u1}", "to_unit": "{u2}"}),
           ("I ran {v} miles today. How far is that in kilometers?",
            {"value": "{v}", "from_unit": "mi", "to_unit": "km"}),
           ("What's {v} ft in meters", {"value": "{v}", "from_unit": "ft", "to_unit": "m"}),
           ("{v}cm to inches", {"value": "{v}", "from_unit": "cm", "to_unit": "in"})),
    _entry(_tool("weightConvert", "Convert a mass between grams, kilograms, ounces, pounds and stone.",
                 ["amount", "source_unit", "target_unit"], amount=_p("number", "The mass to convert"),
                 source_unit=_p("string", "Unit of the given mass", enum=["g", "kg", "oz", "lb", "st"]),
                 target_unit=_p("string", "Unit to convert to", enum=["g", "kg", "oz", "lb", "st"])),
           {"v": (0.5, 2, 12, 70, 150, 500, 11.5), "u1": _MASS_SPOKEN, "u2": _MASS_SPOKEN},
           ("Convert {v} {u1} to {u2}", {"amount": "{v}", "source_unit": "{u1}", "target_unit": "{u2}"}),
           ("How many {u2} is {v} {u1}?", {"amount": "{v}", "source_unit": "{u1}", "target_unit": "{u2}"}),
           ("{v} {u1} in {u2} please", {"amount": "{v}", "source_unit": "{u1}", "target_unit": "{u2}"}),
           ("I weigh {v} pounds. What's that in kilos?", {"amount": "{v}", "source_unit": "lb", "target_unit": "kg"}),
           ("my suitcase is {v}kg, how many pounds is that",
            {"amount": "{v}", "source_unit": "kg", "target_unit": "lb"})),
    _entry(_tool("thermo_convert", "Convert a temperature reading between the Celsius, Fahrenheit and Kelvin scales.",
                 ["degrees", "from_scale", "to_scale"], degrees=_p("number", "The temperature to convert"),
                 from_scale=_p("string", "Scale of the given reading", enum=["celsius", "fahrenheit", "kelvin"]),
                 to_scale=_p("string", "Scale to convert to", enum=["celsius", "fahrenheit", "kelvin"])),
           {"t": (-40, 0, 21, 37, 72, 98.6, 100, 350), "s1": _SCALES, "s2": _SCALES},
           ("Convert {t} degrees {s1} to {s2}.", {"degrees": "{t}", "from_scale": "{s1}", "to_scale": "{s2}"}),
           ("what's {t}°F in celsius", {"degrees": "{t}", "from_scale": "fahrenheit", "to_scale": "celsius"}),
           ("{t} C to F?", {"degrees": "{t}", "from_scale": "celsius", "to_scale": "fahrenheit"}),
           ("The recipe says {t} degrees Fahrenheit. What is that in Celsius?",
            {"degrees": "{t}", "from_scale": "fahrenheit", "to_scale": "celsius"}),
           ("How much is {t} {s1} in {s2}", {"degrees": "{t}", "from_scale": "{s1}", "to_scale": "{s2}"})),
    _entry(_tool("world_clock", "Convert a clock time from one city's time zone to another city's.",
                 ["time", "from_city", "to_city"], time=_p("string", _HHMM),
                 from_city=_p("string", "City whose local time is given"),
                 to_city=_p("string", "City whose local time is wanted")),
           {"h": _TIMES, "c1": _CITIES, "c2": _CITIES},
           ("If it's {h} in {c1}, what time is it in {c2}?", {"time": "{h}", "from_city": "{c1}", "to_city": "{c2}"}),
           ("{h} {c1} time in {c2}?", {"time": "{h}", "from_city": "{c1}", "to_city": "{c2}"}),
           ("Convert {h} {c1} time to {c2} time", {"time": "{h}", "from_city": "{c1}", "to_city": "{c2}"}),
           ("I have a call at {h} {c1} time. When is that in {c2}?",
            {"time": "{h}", "from_city": "{c1}", "to_city": "{c2}"}),
           ("what time will it be in {c2} when it's {h} in {c1}",
            {"time": "{h}", "from_city": "{c1}", "to_city": "{c2}"})),
    # ------------------------------------------------------------------ lookups
    _entry(_tool("dictionary_lookup", "Look up what an English word means in the dictionary.",
                 ["word"], word=_p("string", "The word to define"),
                 include_examples=_p("boolean", "Also return example sentences")),
           {"w": ("serendipity", "ephemeral", "ubiquitous", "gregarious", "quixotic", "petrichor", "laconic")},
           ("What does {w} mean?", {"word": "{w}"}),
           ("define {w}", {"word": "{w}"}),
           ("Definition of '{w}'?", {"word": "{w}"}),
           ("what's the meaning of the word {w}", {"word": "{w}"}),
           ("Look up {w} and give me a few example sentences.", {"word": "{w}", "include_examples": True}),
           ("{w} meaning", {"word": "{w}"})),
    _entry(_tool("fetch_headlines", "Get the latest news headlines, optionally on one topic or from one country.",
                 [], topic=_p("string", "News section", enum=["world", "business", "technology", "sports", "science",
                                                               "health", "entertainment"]),
                 country=_p("string", "Country the news is from"),
                 limit=_p("integer", "How many headlines to return", minimum=1, maximum=20)),
           {"t": (("tech", "technology"), ("technology", "technology"), ("business", "business"), ("sports", "sports"),
                  ("science", "science"), ("health", "health"), ("world", "world")),
            "c": _COUNTRIES, "n": (3, 5, 10)},
           ("What's in the news today?", {}),
           ("Show me the latest {t} headlines.", {"topic": "{t}"}),
           ("any {t} news from {c}?", {"topic": "{t}", "country": "{c}"}),
           ("top {n} headlines please", {"limit": "{n}"}),
           ("What's happening in {c} right now? Give me the news.", {"country": "{c}"}),
           ("give me {n} {t} stories", {"topic": "{t}", "limit": "{n}"})),
    _entry(_tool("flightStatus", "Live status of a flight by its flight number: departure, arrival, delay and gate.",
                 ["flightNumber"], flightNumber=_p("string", "Airline code and number, e.g. LH 400"),
                 date=_p("string", _DATE)),
           {"f": ("BA 117", "LH400", "UA 925", "AF 1680", "DL 44", "QF1", "EK 203"), "d": _DATES},
           ("Is flight {f} on time?", {"flightNumber": "{f}"}),
           ("status of {f}", {"flightNumber": "{f}"}),
           ("When does {f} land?", {"flightNumber": "{f}"}),
           ("Is {f} on {d} delayed?", {"flightNumber": "{f}", "date": "{d}"}),
           ("check flight {f} for {d}", {"flightNumber": "{f}", "date": "{d}"}),
           ("what gate does {f} leave from", {"flightNumber": "{f}"})),
    _entry(_tool("find_showtimes", "Showtimes of a film at the cinemas of a city, optionally on one date.",
                 ["movie", "city"], movie=_p("string", "Film title"), city=_p("string", "City to search"),
                 date=_p("string", _DATE)),
           {"m": ("Dune: Part Two", "Inside Out 2", "Oppenheimer", "The Wild Robot", "Wicked", "Paddington in Peru"),
            "c": _CITIES, "d": _DATES},
           ("When is {m} playing in {c}?", {"movie": "{m}", "city": "{c}"}),
           ("showtimes for {m} in {c} on {d}", {"movie": "{m}", "city": "{c}", "date": "{d}"}),
           ("I want to see {m} in {c}, what times are there?", {"movie": "{m}", "city": "{c}"}),
           ("{m} {c} times", {"movie": "{m}", "city": "{c}"}),
           ("Where can I watch {m} in {c} on {d}?", {"movie": "{m}", "city": "{c}", "date": "{d}"})),
    _entry(_tool("search_restaurants", "Find restaurants near a place, optionally by cuisine, price level and whether "
                 "they are open now.", ["location"], location=_p("string", "Neighbourhood, street or city"),
                 cuisine=_p("string", "Kind of food, e.g. Thai"),
                 price=_p("string", "Price level", enum=["cheap", "moderate", "expensive"]),
                 open_now=_p("boolean", "Only places open right now")),
           {"f": ("sushi", "Thai", "Italian", "Mexican", "vegan", "Ethiopian", "ramen", "Indian"),
            "l": ("downtown Chicago", "Shoreditch", "Kreuzberg", "the Mission District", "Shibuya", "Le Marais")},
           ("Find me a {f} restaurant in {l}.", {"location": "{l}", "cuisine": "{f}"}),
           ("cheap eats in {l}?", {"location": "{l}", "price": "cheap"}),
           ("Any good {f} places open right now near {l}?", {"location": "{l}", "cuisine": "{f}", "open_now": True}),
           ("I'm looking for somewhere fancy to eat in {l}", {"location": "{l}", "price": "expensive"}),
           ("where can i get {f} food in {l}", {"location": "{l}", "cuisine": "{f}"}),
           ("restaurants {l}", {"location": "{l}"})),
    _entry(_tool("latest_score", "Score or result of a team's most recent or ongoing game.",
                 ["team"], team=_p("string", "Team name"), league=_p("string", "League or competition")),
           {"t": _TEAMS, "f": _FOOTBALL},
           ("Did {t} win last night?", {"team": "{t}"}),
           ("{t} score?", {"team": "{t}"}),
           ("How did {f} do in the Premier League this weekend?", {"team": "{f}", "league": "Premier League"}),
           ("What's the score in the {t} game?", {"team": "{t}"}),
           ("is {t} winning right now", {"team": "{t}"}),
           ("Result of {f}'s last Champions League match?", {"team": "{f}", "league": "Champions League"})),
    _entry(_tool("fx_rate", "Today's exchange rate between two currencies: what one unit of the base currency is "
                 "worth in the quote currency.", ["base", "quote"],
                 base=_p("string", "ISO 4217 code of the base currency, e.g. USD"),
                 quote=_p("string", "ISO 4217 code of the quote currency, e.g. JPY")),
           {"a": _CURRENCY_CODES, "b": _CURRENCY_CODES, "na": _CURRENCY_NAMES, "nb": _CURRENCY_NAMES},
           ("What's the {a}/{b} exchange rate?", {"base": "{a}", "quote": "{b}"}),
           ("exchange rate {a} to {b}", {"base": "{a}", "quote": "{b}"}),
           ("What's the rate for {na} against {nb} today?", {"base": "{na}", "quote": "{nb}"}),
           ("{a} {b} rate", {"base": "{a}", "quote": "{b}"}),
           ("how many {b} does one {a} buy right now?", {"base": "{a}", "quote": "{b}"}),
           ("current exchange rate between {na} and {nb}", {"base": "{na}", "quote": "{nb}"})),
    _entry(_tool("track_parcel", "Track a parcel by courier and tracking number: where it is and when it arrives.",
                 ["carrier", "tracking_number"],
                 carrier=_p("string", "The courier", enum=["UPS", "FedEx", "DHL", "USPS", "Royal Mail"]),
                 tracking_number=_p("string", "The courier's tracking number")),
           {"c": ("UPS", "FedEx", "DHL", "USPS", "Royal Mail"),
            "t": ("1Z999AA10123456784", "7489 2210 5531", "JD014600006281", "9400111899223856", "RM123456789GB")},
           ("Where's my {c} package {t}?", {"carrier": "{c}", "tracking_number": "{t}"}),
           ("track {c} {t}", {"carrier": "{c}", "tracking_number": "{t}"}),
           ("Can you check {c} tracking number {t}?", {"carrier": "{c}", "tracking_number": "{t}"}),
           ("{t} via {c}, when will it arrive?", {"carrier": "{c}", "tracking_number": "{t}"}),
           ("status of my {c} shipment, tracking {t}", {"carrier": "{c}", "tracking_number": "{t}"})),
    _entry(_tool("country_population", "Population of a country, the latest figure or that of a given year.",
                 ["country"], country=_p("string", "Country name"),
                 year=_p("integer", "Year of the figure", minimum=1950, maximum=2025)),
           {"c": _COUNTRIES, "y": _YEARS},
           ("What's the population of {c}?", {"country": "{c}"}),
           ("How many people live in {c}?", {"country": "{c}"}),
           ("population of {c} in {y}", {"country": "{c}", "year": "{y}"}),
           ("{c} population", {"country": "{c}"}),
           ("how many people lived in {c} back in {y}", {"country": "{c}", "year": "{y}"})),
    _entry(_tool("list_public_holidays", "The public holidays of a country, this year or a given year.",
                 ["country"], country=_p("string", "Country name"),
                 year=_p("integer", "The year", minimum=1950, maximum=2100)),
           {"c": _COUNTRIES, "y": (2025, 2026, 2027)},
           ("What are the public holidays in {c} this year?", {"country": "{c}"}),
           ("List {c}'s bank holidays for {y}.", {"country": "{c}", "year": "{y}"}),
           ("public holidays {c} {y}", {"country": "{c}", "year": "{y}"}),
           ("Which days off does everyone get in {c} in {y}?", {"country": "{c}", "year": "{y}"}),
           ("national holidays in {c}?", {"country": "{c}"})),
    _entry(_tool("find_nearby", "Find places of one kind near a location: pharmacies, gas stations, ATMs, hospitals, "
                 "supermarkets or parking.", ["place_type", "near"],
                 place_type=_p("string", "Kind of place", enum=["pharmacy", "gas_station", "atm", "hospital",
                                                                 "supermarket", "parking"]),
                 near=_p("string", "Address or landmark to search around")),
           {"k": (("pharmacy", "pharmacy"), ("gas station", "gas_station"), ("ATM", "atm"), ("hospital", "hospital"),
                  ("supermarket", "supermarket"), ("parking garage", "parking")),
            "l": ("Union Square", "King's Cross", "Alexanderplatz", "Central Station", "Times Square", "Ueno Park")},
           ("Where's the nearest {k} to {l}?", {"place_type": "{k}", "near": "{l}"}),
           ("find a {k} near {l}", {"place_type": "{k}", "near": "{l}"}),
           ("{k} near {l}?", {"place_type": "{k}", "near": "{l}"}),
           ("I need a {k} close to {l}", {"place_type": "{k}", "near": "{l}"}),
           ("Is there a {k} around {l}?", {"place_type": "{k}", "near": "{l}"})),
    # ------------------------------------------------------------------ messaging
    _entry(_tool("send_sms", "Send a text message (SMS) to a phone number.",
                 ["phone_number", "message"], phone_number=_p("string", "Recipient's phone number"),
                 message=_p("string", "Text of the message")),
           {"p": _PHONES, "m": _SHORT_MESSAGES},
           ("Text {p} saying {m}", {"phone_number": "{p}", "message": "{m}"}),
           ("send an SMS to {p}: {m}", {"phone_number": "{p}", "message": "{m}"}),
           ("Can you text {p} and tell them '{m}'?", {"phone_number": "{p}", "message": "{m}"}),
           ("sms {p} \"{m}\"", {"phone_number": "{p}", "message": "{m}"}),
           ("Message {p}: {m}", {"phone_number": "{p}", "message": "{m}"})),
    _entry(_tool("postSlackMessage", "Post a message to a Slack channel.",
                 ["channel", "text"], channel=_p("string", "Channel name without the #"),
                 text=_p("string", "Message to post")),
           {"c": ("general", "random", "engineering", "design-team", "standup", "marketing"),
            "t": ("deploy finished", "lunch is here", "standup moved to 10:15", "please review PR 482",
                  "the build is green again")},
           ("Post '{t}' in #{c}", {"channel": "{c}", "text": "{t}"}),
           ("tell the {c} channel on slack: {t}", {"channel": "{c}", "text": "{t}"}),
           ("Slack #{c}: {t}", {"channel": "{c}", "text": "{t}"}),
           ("Can you let everyone in #{c} know \"{t}\"?", {"channel": "{c}", "text": "{t}"}),
           ("drop a note in the {c} slack channel saying {t}", {"channel": "{c}", "text": "{t}"})),
    _entry(_tool("reply_to_email", "Reply to the latest message in the user's inbox from a given sender, optionally "
                 "to everyone on the thread.", ["sender", "body"],
                 sender=_p("string", "Name or address of the person whose message to answer"),
                 body=_p("string", "Text of the reply"), reply_all=_p("boolean", "Reply to all recipients")),
           {"s": ("Sarah", "Priya Nair", "dana@example.com", "Tom", "accounts@acme.com"),
            "b": ("sounds good, see you then", "I'll send the report by Friday", "thanks, received",
                  "can we move it to Thursday?")},
           ("Reply to {s}'s email and say '{b}'", {"sender": "{s}", "body": "{b}"}),
           ("answer {s}: {b}", {"sender": "{s}", "body": "{b}"}),
           ("Write back to everyone on {s}'s thread saying \"{b}\"",
            {"sender": "{s}", "body": "{b}", "reply_all": True}),
           ("reply all to {s}'s message: {b}", {"sender": "{s}", "body": "{b}", "reply_all": True}),
           ("respond to the email from {s} with '{b}'", {"sender": "{s}", "body": "{b}"})),
    # ------------------------------------------------------------------ scheduling
    _entry(_tool("set_alarm", "Set an alarm clock to ring at a time of day, optionally labelled and repeated daily.",
                 ["time"], time=_p("string", _HHMM), label=_p("string", "Name shown when the alarm rings"),
                 repeat_daily=_p("boolean", "Ring every day")),
           {"h": _TIMES, "l": ("gym", "take meds", "school run", "standup")},
           ("Wake me up at {h}.", {"time": "{h}"}),
           ("set an alarm for {h}", {"time": "{h}"}),
           ("alarm {h} tomorrow", {"time": "{h}"}),
           ("Set a daily alarm at {h} called {l}", {"time": "{h}", "label": "{l}", "repeat_daily": True}),
           ("I need an alarm at {h} labelled '{l}'", {"time": "{h}", "label": "{l}"}),
           ("can u set my alarm to {h} every day", {"time": "{h}", "repeat_daily": True})),
    _entry(_tool("remind_me", "Create a reminder that notifies the user of a task at a time of day, optionally on a "
                 "given date.", ["task", "time"], task=_p("string", "What to be reminded of"),
                 time=_p("string", _HHMM), date=_p("string", _DATE)),
           {"t": ("call mom", "water the plants", "pay the rent", "pick up the dry cleaning",
                  "submit the expense report", "take the bins out"), "h": _TIMES, "d": _DATES},
           ("Remind me to {t} at {h}.", {"task": "{t}", "time": "{h}"}),
           ("remind me at {h} to {t}", {"task": "{t}", "time": "{h}"}),
           ("Can you set a reminder for {d} at {h}: {t}", {"task": "{t}", "time": "{h}", "date": "{d}"}),
           ("don't let me forget to {t}, {h} on {d}", {"task": "{t}", "time": "{h}", "date": "{d}"}),
           ("reminder: {t}, {h}", {"task": "{t}", "time": "{h}"})),
    _entry(_tool("reserveRoom", "Book a meeting room for a date, start time and duration.",
                 ["room", "date", "startTime", "durationMinutes"], room=_p("string", "Name of the meeting room"),
                 date=_p("string", _DATE), startTime=_p("string", _HHMM),
                 durationMinutes=_p("integer", "Length of the booking in minutes", minimum=15, maximum=480)),
           {"r": ("Everest", "Room 4B", "Aquarium", "Boardroom 2", "Kilimanjaro"), "d": _DATES, "h": _TIMES,
            "m": (("30 minutes", 30), ("an hour", 60), ("90 minutes", 90), ("two hours", 120), ("45 min", 45))},
           ("Book {r} on {d} at {h} for {m}.", {"room": "{r}", "date": "{d}", "startTime": "{h}",
                                                 "durationMinutes": "{m}"}),
           ("reserve meeting room {r}, {d}, {h}, {m}", {"room": "{r}", "date": "{d}", "startTime": "{h}",
                                                          "durationMinutes": "{m}"}),
           ("I need {r} for {m} starting {h} on {d}", {"room": "{r}", "date": "{d}", "startTime": "{h}",
                                                        "durationMinutes": "{m}"}),
           ("grab {r} for us on {d} from {h}, {m}", {"room": "{r}", "date": "{d}", "startTime": "{h}",
                                                      "durationMinutes": "{m}"})),
    _entry(_tool("cancel_calendar_event", "Cancel an existing event in the user's calendar, found by its title and "
                 "optionally its date.", ["title"], title=_p("string", "Title of the event"),
                 date=_p("string", _DATE)),
           {"t": ("dentist appointment", "team sync", "yoga class", "1:1 with Maria", "book club"), "d": _DATES},
           ("Cancel my {t}.", {"title": "{t}"}),
           ("cancel {t} on {d}", {"title": "{t}", "date": "{d}"}),
           ("Please take the {t} off my calendar", {"title": "{t}"}),
           ("I can't make the {t} on {d}, cancel it", {"title": "{t}", "date": "{d}"}),
           ("call off the {t}", {"title": "{t}"})),
    # ------------------------------------------------------------------ home and media
    _entry(_tool("play_music", "Play a song on the user's speakers, optionally by a given artist.",
                 ["song"], song=_p("string", "Song title"), artist=_p("string", "Performer")),
           {"s": _SONGS},
           ("Play {s[song]} by {s[artist]}", {"song": "{s[song]}", "artist": "{s[artist]}"}),
           ("put on {s[song]}", {"song": "{s[song]}"}),
           ("I want to hear {s[song]}", {"song": "{s[song]}"}),
           ("play {s[artist]}'s {s[song]}", {"song": "{s[song]}", "artist": "{s[artist]}"}),
           ("Can you play '{s[song]}'?", {"song": "{s[song]}"})),
    _entry(_tool("lights_on", "Switch on the lights of a room in the house, optionally at a brightness level.",
                 ["room"], room=_p("string", "The room"),
                 brightness=_p("integer", "Brightness in percent", minimum=1, maximum=100)),
           {"r": _ROOMS, "b": (10, 25, 40, 50, 80, 100)},
           ("Turn on the {r} lights.", {"room": "{r}"}),
           ("lights on in the {r}", {"room": "{r}"}),
           ("It's dark in the {r}, can you switch the lights on?", {"room": "{r}"}),
           ("put the {r} lights on at {b}%", {"room": "{r}", "brightness": "{b}"}),
           ("{r} lights on, {b} percent", {"room": "{r}", "brightness": "{b}"})),
    _entry(_tool("setThermostat", "Set the home thermostat to a target temperature, optionally choosing the unit and "
                 "the heating or cooling mode.", ["target"], target=_p("number", "Target temperature"),
                 unit=_p("string", "Temperature unit", enum=["celsius", "fahrenheit"]),
                 mode=_p("string", "Operating mode", enum=["heat", "cool", "auto"])),
           {"c": (18, 19.5, 21, 22, 24), "f": (65, 68, 70, 72, 75)},
           ("Set the thermostat to {f} degrees.", {"target": "{f}"}),
           ("make it {c}°C in here", {"target": "{c}", "unit": "celsius"}),
           ("heat the house to {c} celsius", {"target": "{c}", "unit": "celsius", "mode": "heat"}),
           ("cool it down to {f}F", {"target": "{f}", "unit": "fahrenheit", "mode": "cool"}),
           ("thermostat {c}", {"target": "{c}"}),
           ("put the climate control on auto at {f} degrees Fahrenheit",
            {"target": "{f}", "unit": "fahrenheit", "mode": "auto"})),
    _entry(_tool("set_volume", "Set the playback volume of a speaker or device, from 0 (mute) to 100.",
                 ["level"], level=_p("integer", "Volume from 0 to 100", minimum=0, maximum=100),
                 device=_p("string", "Which speaker or device")),
           {"v": (10, 25, 30, 50, 65, 80), "d": ("kitchen speaker", "TV", "soundbar", "bedroom speaker")},
           ("Set the volume to {v}.", {"level": "{v}"}),
           ("volume {v}%", {"level": "{v}"}),
           ("turn the {d} to {v}", {"level": "{v}", "device": "{d}"}),
           ("mute the {d}", {"level": 0, "device": "{d}"}),
           ("can you put the volume at {v} percent", {"level": "{v}"})),
    # ------------------------------------------------------------------ odds and ends
    _entry(_tool("make_password", "Generate a random password of a given length, with or without symbols.",
                 ["length"], length=_p("integer", "Number of characters", minimum=8, maximum=64),
                 include_symbols=_p("boolean", "Include symbols such as !, # and %")),
           {"n": (8, 12, 16, 20, 24, 32)},
           ("Generate a {n}-character password.", {"length": "{n}"}),
           ("I need a new password, {n} characters, no symbols", {"length": "{n}", "include_symbols": False}),
           ("make me a strong password with symbols, length {n}", {"length": "{n}", "include_symbols": True}),
           ("random password {n} chars", {"length": "{n}"}),
           ("Can you create a password that's {n} characters long?", {"length": "{n}"})),
    _entry(_tool("roll_dice", "Roll one or more dice with a given number of sides (six-sided by default).",
                 [], sides=_p("integer", "Sides per die", enum=[4, 6, 8, 10, 12, 20]),
                 count=_p("integer", "Number of dice", minimum=1, maximum=10)),
           {"s": (4, 6, 8, 10, 12, 20), "k": (2, 3, 4, 5), "w": (("two", 2), ("three", 3), ("four", 4))},
           ("Roll a die.", {}),
           ("roll {k}d{s}", {"sides": "{s}", "count": "{k}"}),
           ("Can you roll a {s}-sided die?", {"sides": "{s}"}),
           ("throw {w} dice for me", {"count": "{w}"}),
           ("d{s} roll pls", {"sides": "{s}"})),
    _entry(_tool("coin_toss", "Flip a coin and say heads or tails.", []),
           {},
           ("Flip a coin.", {}),
           ("heads or tails?", {}),
           ("toss a coin for me", {}),
           ("coin flip pls", {})),
    _entry(_tool("random_integer", "Pick a random whole number between a low and a high bound, both included.",
                 ["low", "high"], low=_p("integer", "Smallest allowed number"),
                 high=_p("integer", "Largest allowed number")),
           {"lo": (0, 1, 5, 10), "hi": (20, 50, 100, 1000)},
           ("Pick a random number between {lo} and {hi}.", {"low": "{lo}", "high": "{hi}"}),
           ("random number {lo}-{hi}", {"low": "{lo}", "high": "{hi}"}),
           ("give me a number from {lo} to {hi} at random", {"low": "{lo}", "high": "{hi}"}),
           ("think of a number between {lo} and {hi}", {"low": "{lo}", "high": "{hi}"})),
    _entry(_tool("tip_calculator", "Work out the tip on a restaurant bill and, optionally, each person's share when "
                 "the bill is split.", ["bill_amount", "tip_percent"],
                 bill_amount=_p("number", "The bill before tip"), tip_percent=_p("number", "Tip in percent, e.g. 18"),
                 split_between=_p("integer", "Number of people sharing the bill", minimum=1)),
           {"b": (42.5, 60, 87.3, 120, 245), "p": (10, 15, 18, 20, 22), "k": (2, 3, 4, 6)},
           ("What's a {p}% tip on ${b}?", {"bill_amount": "{b}", "tip_percent": "{p}"}),
           ("tip on {b} at {p} percent", {"bill_amount": "{b}", "tip_percent": "{p}"}),
           ("Our bill was {b} and we want to leave {p}%, split between {k} people. How much each?",
            {"bill_amount": "{b}", "tip_percent": "{p}", "split_between": "{k}"}),
           ("calculate a {p}% tip for a {b} bill", {"bill_amount": "{b}", "tip_percent": "{p}"}),
           ("{b} bill, {p}% tip, {k} ways", {"bill_amount": "{b}", "tip_percent": "{p}", "split_between": "{k}"})),
    _entry(_tool("body_mass_index", "Compute body mass index (BMI) from weight in kilograms and height in centimetres.",
                 ["weight_kg", "height_cm"], weight_kg=_p("number", "Body weight in kilograms"),
                 height_cm=_p("number", "Height in centimetres")),
           {"w": (55, 62.5, 70, 81, 95), "h": (158, 165, 172.5, 180, 191)},
           ("What's my BMI? I'm {h} cm and {w} kg.", {"weight_kg": "{w}", "height_cm": "{h}"}),
           ("bmi {w}kg {h}cm", {"weight_kg": "{w}", "height_cm": "{h}"}),
           ("I weigh {w} kilos and I'm {h} centimeters tall, am I a healthy weight?",
            {"weight_kg": "{w}", "height_cm": "{h}"}),
           ("calculate body mass index for {w} kg, {h} cm", {"weight_kg": "{w}", "height_cm": "{h}"})),
    _entry(_tool("count_words", "Count the words in a piece of text.", ["text"], text=_p("string", "The text")),
           {"t": _TEXTS},
           ("How many words are in \"{t}\"?", {"text": "{t}"}),
           ("word count: {t}", {"text": "{t}"}),
           ("count the words in this: {t}", {"text": "{t}"}),
           ("how long is this sentence in words? '{t}'", {"text": "{t}"})),
    _entry(_tool("reverse_text", "Reverse the order of the characters in a string.",
                 ["text"], text=_p("string", "The string to reverse")),
           {"t": ("hello world", "stressed", "racecar", "OpenAI", "12345", "live on time")},
           ("Reverse the string '{t}'.", {"text": "{t}"}),
           ("what's '{t}' backwards?", {"text": "{t}"}),
           ("spell {t} backwards", {"text": "{t}"}),
           ("reverse: {t}", {"text": "{t}"}),
           ("flip the characters of \"{t}\"", {"text": "{t}"})),
    _entry(_tool("days_between", "Count the days from one date to another.",
                 ["start_date", "end_date"], start_date=_p("string", _DATE), end_date=_p("string", _DATE)),
           {"a": _DATES, "b": _DATES},
           ("How many days between {a} and {b}?", {"start_date": "{a}", "end_date": "{b}"}),
           ("days from {a} to {b}", {"start_date": "{a}", "end_date": "{b}"}),
           ("How long is it from {a} until {b}, in days?", {"start_date": "{a}", "end_date": "{b}"}),
           ("{a} → {b}: how many days", {"start_date": "{a}", "end_date": "{b}"})),
)

EVERYDAY_TOOLS: list[dict[str, Any]] = [tool for tool, _, _ in _ENTRIES]
"""The everyday tools in the unified format (strict JSON Schema parameters)."""
EVERYDAY_TEMPLATES: dict[str, tuple[Template, ...]] = {tool["name"]: templates for tool, _, templates in _ENTRIES}
"""Request templates per tool name."""
_SLOTS: dict[str, Mapping[str, Sequence[Any]]] = {tool["name"]: slots for tool, slots, _ in _ENTRIES}

NO_CALL_REQUESTS = (
    "Hey, how's it going?", "thanks a lot!", "Cheers, that's perfect.", "good night", "ok", "never mind", "lol",
    "bye!", "You're awesome, thank you", "Good afternoon!", "I'm bored.", "What's your name?",
    "Who painted the Mona Lisa?", "What's the capital of Canada?", "How many legs does a spider have?",
    "Why is the sky blue?", "Is a tomato a fruit or a vegetable?", "When did the Berlin Wall fall?",
    "what does DNA stand for", "Who was the first person on the moon?", "How many continents are there?",
    "Explain photosynthesis in simple terms.", "Tell me a joke.", "write a short poem about autumn",
    "Can you recommend a good sci-fi novel?", "What's a good name for a golden retriever?", "how do I boil an egg",
    "Summarize the plot of Pride and Prejudice.", "What's the best way to learn the guitar?",
    "Help me write a cover letter for a barista job.", "Order me a large pepperoni pizza.",
    "Book me a taxi to the airport.", "Open the garage door.", "Delete all the photos on my phone.",
    "Please remember that my favourite colour is green.", "Explain what a square root is.",
    "How do I work out a tip in my head?", "What does BMI actually measure?", "Do you dream?",
    "Give me three tips for sleeping better.",
)
"""Requests that no everyday tool answers: chit-chat, thanks, general knowledge, jobs no tool does."""
_JOINS = (("{a} and also {b}", False), ("{a} Also, {b}", True), ("{a}, then {b}", False), ("{a} And {b}", True),
          ("{a}; and {b}", False), ("{a} After that, {b}", True), ("{a} and {b}", False))
"""Ways to ask for two things in one message (True: the first request keeps its closing punctuation)."""
_FIRST_PERSON = {"I", "I'm", "I'd", "I'll", "I've"}


def _draw(slots: Mapping[str, Sequence[Any]], names: Sequence[str], rng: random.Random
          ) -> tuple[dict[str, Any], dict[str, Any]]:
    """(spoken, value) per slot name; slots that share a value list get different values."""
    spoken: dict[str, Any] = {}
    values: dict[str, Any] = {}
    for name in names:
        pool = slots[name]
        taken = [values[other] for other in values if slots[other] is pool]
        item = rng.choice([item for item in pool if (item[1] if isinstance(item, tuple) else item) not in taken])
        spoken[name], values[name] = item if isinstance(item, tuple) else (item, item)
    return spoken, values


def _fields(template: str) -> list[str]:
    """The slot names a template uses, in order, once each (`s` for `{s[song]}`)."""
    roots = (re.split(r"[\[.]", field)[0] for _, field, _, _ in _FORMATTER.parse(template) if field)
    return list(dict.fromkeys(roots))


def render_request(name: str, rng: random.Random, index: int | None = None) -> tuple[str, GoldCall, str]:
    """A request for tool `name` from its template `index` (random when None): (text, gold call, template)."""
    templates = EVERYDAY_TEMPLATES[name]
    template, gold = templates[rng.randrange(len(templates)) if index is None else index]
    spoken, values = _draw(_SLOTS[name], _fields(template), rng)
    text = template.format(**spoken)
    if template[-1] in ".?!" and rng.random() < 0.2:  # people often leave the final mark off
        text = text[:-1]
    arguments = {}
    for key, value in gold.items():
        match = _FIELD.fullmatch(value) if isinstance(value, str) else None
        arguments[key] = _FORMATTER.get_field(match[1], (), values)[0] if match else value
    return text, GoldCall(name=name, arguments=arguments), template


def _join(first: tuple[str, str], second: tuple[str, str], rng: random.Random) -> str:
    """Two (text, template) requests as one message. Only a closing mark of the first template is dropped, and
    the second's first letter is lowered only where its template starts with an ordinary word."""
    (a, a_template), (b, b_template) = first, second
    join, keeps_mark = rng.choice(_JOINS)
    if keeps_mark and a[-1] not in ".?!":
        a += "."
    elif not keeps_mark and a_template[-1] in ".?" and a[-1] == a_template[-1]:
        a = a[:-1]
    if not b_template.startswith("{") and b.split(" ", 1)[0] not in _FIRST_PERSON and b[1:2].islower():
        b = b[0].lower() + b[1:]
    return join.format(a=a, b=b)


def everyday_examples(count: int, rng: random.Random, *, tools: Sequence[Mapping[str, Any]] = EVERYDAY_TOOLS,
                      tools_per_example: tuple[int, int] = (5, 12)) -> list[Example]:
    """`count` examples (source "everyday") over `tools` (everyday tools, e.g. one side of `split_everyday`): about
    70 % one call, 15 % two calls of different tools in one message, 15 % no call (`KIND_WEIGHTS`). Each example
    offers its gold tools and random other tools of `tools`, `tools_per_example` in all (at most all of `tools`),
    shuffled. Ids are `everyday:<index>`. Every gold call validates against its schema (`ValueError` otherwise).
    Deterministic for the rng's state."""
    by_name = {tool["name"]: tool for tool in tools}
    unknown = sorted(by_name.keys() - EVERYDAY_TEMPLATES.keys())
    if unknown:
        raise ValueError(f"not everyday tools (no templates): {unknown}")
    if len(by_name) != len(tools) or len(by_name) < 2:
        raise ValueError("tools must be at least two everyday tools with distinct names")
    low, high = min(tools_per_example[0], len(by_name)), min(tools_per_example[1], len(by_name))
    examples = []
    for index in range(count):
        kind = rng.choices(list(KIND_WEIGHTS), list(KIND_WEIGHTS.values()))[0]
        if kind == "none":
            gold, calls, text = [], [], rng.choice(NO_CALL_REQUESTS)
        else:
            gold = rng.sample(sorted(by_name), 1 if kind == "single" else 2)
            asked = [render_request(name, rng) for name in gold]
            calls = [call for _, call, _ in asked]
            text = asked[0][0] if kind == "single" else _join(asked[0][::2], asked[1][::2], rng)
        total = max(rng.randint(low, high), len(gold))
        others = rng.sample(sorted(set(by_name) - set(gold)), total - len(gold))
        offered = [by_name[name] for name in [*gold, *others]]
        rng.shuffle(offered)
        example = Example(id=f"{SOURCE}:{index}", source=SOURCE, tools=offered,
                          messages=[{"role": "user", "content": text}], calls=calls)
        errors = call_errors(example)
        if errors:
            raise ValueError(f"an everyday template gives an invalid call: {errors}")
        examples.append(example)
    return examples


def split_everyday(fraction: float, rng: random.Random) -> tuple[list[dict[str, Any]], list[dict[str, Any]]]:
    """(train tools, validation tools): `fraction` of `EVERYDAY_TOOLS`, chosen at random, held out by name."""
    names = [tool["name"] for tool in EVERYDAY_TOOLS]
    held_out = set(rng.sample(names, round(fraction * len(names))))
    return ([tool for tool in EVERYDAY_TOOLS if tool["name"] not in held_out],
            [tool for tool in EVERYDAY_TOOLS if tool["name"] in held_out])


# ---------------------------------------------------------------- function masking


def _identifier(prefix: str, length: int, rng: random.Random, taken: set[str]) -> str:
    """A fresh random identifier such as `f_3k9x`, not in `taken` (which it joins)."""
    while True:
        name = prefix + "".join(rng.choice(_ALPHABET) for _ in range(length))
        if name not in taken:
            taken.add(name)
            return name


def _mask_schema(schema: Mapping[str, Any], rng: random.Random) -> tuple[dict[str, Any], Callable[[Any], Any]]:
    """A copy of `schema` whose property names are random identifiers at every depth (through `properties` and
    array `items`; `required` follows), and the function that renames a value's keys the same way."""
    masked = dict(schema)
    properties = schema.get("properties")
    if isinstance(properties, Mapping):
        taken: set[str] = set()
        names = {key: _identifier("p_", 2, rng, taken) for key in properties}
        inner = {key: _mask_schema(sub, rng) if isinstance(sub, Mapping) else (sub, lambda v: v)
                 for key, sub in properties.items()}
        masked["properties"] = {names[key]: sub for key, (sub, _) in inner.items()}
        if "required" in schema:
            masked["required"] = [names[key] for key in schema["required"]]

        def rename(value: Any) -> Any:
            if not isinstance(value, dict):
                return value
            return {names.get(k, k): inner[k][1](v) if k in inner else v for k, v in value.items()}
        return masked, rename
    if isinstance(schema.get("items"), Mapping):
        masked["items"], item = _mask_schema(schema["items"], rng)
        return masked, lambda value: [item(v) for v in value] if isinstance(value, list) else value
    return masked, lambda value: value


def mask_names(example: Example, rng: random.Random) -> Example:
    """A copy of `example` with every tool name and parameter name replaced by a random identifier (`f_3k9x`,
    `p_a7`), the same in its tools, gold calls and the calls and tool results of its messages; descriptions,
    enums and message texts are kept, so the right tool can only be told by what its description says. BFCL's
    `allowed` lists are dropped (a masked example is for training, whose target is `arguments`)."""
    taken: set[str] = set()
    tools, renames, names = [], {}, {}
    for tool in example.tools:
        name = names[tool["name"]] = _identifier("f_", 4, rng, taken)
        parameters, renames[tool["name"]] = _mask_schema(tool["parameters"], rng)
        tools.append({**tool, "name": name, "parameters": parameters})

    def masked_call(name: str, arguments: Any) -> dict[str, Any]:
        return {"name": names.get(name, name), "arguments": renames[name](arguments) if name in renames else arguments}

    messages = []
    for message in example.messages:
        message = dict(message)
        if isinstance(message.get("tool_calls"), list):
            message["tool_calls"] = [
                {**call, **masked_call(call["name"], call.get("arguments", {}))}
                for call in message["tool_calls"]]
        if message["role"] == "tool" and "name" in message:
            message["name"] = names.get(message["name"], message["name"])
        messages.append(message)
    calls = [masked_call(call.name, call.arguments) for call in example.calls]
    return Example.model_validate({**example.model_dump(), "tools": tools, "messages": messages, "calls": calls})
