"""Streamed text answers and stop sequences: `TextStream`, `ToolRouter.stream`/`astream`, `route(stop=...)`."""

import asyncio

import pytest
from conftest import EMAIL

from toolformer_router import InvalidQueryError
from toolformer_router.streaming import TextStream, answer_text, check_stop


def _stream_pieces(tokenizer, text: str, stop=()) -> tuple[list[str], bool]:
    """Feed `text`'s tokens one by one into a `TextStream`; (the pieces it emitted, whether it asked to go on)."""
    pieces: list[str] = []
    stream = TextStream(tokenizer, stop, pieces.append)
    going = True
    for token in tokenizer(text, add_special_tokens=False)["input_ids"]:
        going = stream.feed([token])
        if not going:
            break
    stream.close(answer_text(text, stop))
    return pieces, going


def test_text_stream_pieces_join_into_the_answer_and_hold_back_what_may_change(tokenizer):
    text = "  Ünïcode ☃ and emoji 🙂 arrive whole.  \n"
    pieces, going = _stream_pieces(tokenizer, text)
    assert going and "".join(pieces) == "Ünïcode ☃ and emoji 🙂 arrive whole." and len(pieces) > 3
    assert not any("\ufffd" in piece for piece in pieces)  # a character is sent once all its bytes arrived
    assert not pieces[0].startswith(" ")


def test_text_stream_ends_at_a_stop_sequence_and_never_sends_part_of_one(tokenizer):
    pieces, going = _stream_pieces(tokenizer, "The answer is 42. STOP and more text here.", stop=("STOP",))
    assert not going and "".join(pieces) == "The answer is 42."
    assert not any("ST" in piece for piece in pieces)
    pieces, going = _stream_pieces(tokenizer, "Nothing stops this STO answer.", stop=("STOP",))
    assert going and "".join(pieces) == "Nothing stops this STO answer."  # a held-back prefix is sent later


def test_stop_sequences_are_bounded():
    assert check_stop("x") == ("x",) and check_stop(None) == ()
    for bad in (["a", "b", "c", "d", "e"], [""], ["x" * 300], [3], 3, b"STOP", {"STOP": 1}):
        with pytest.raises(InvalidQueryError, match="stop"):
            check_stop(bad)


def test_a_route_ends_its_text_answer_at_a_stop_sequence(make_router):
    router = make_router()
    free = router.route("tell me a story", tools=[EMAIL], tool_choice="none", max_new_tokens=24)
    words = free.text.split()
    assert len(words) >= 4, free.text
    stop = words[len(words) // 2]
    stopped = router.route("tell me a story", tools=[EMAIL], tool_choice="none", max_new_tokens=24, stop=[stop])
    assert stopped.text == free.text[: free.text.index(stop)].rstrip()
    assert stopped.finish_reason == "stop" and stopped.usage.output_tokens < free.usage.output_tokens


def test_stream_pieces_merge_into_exactly_the_routed_result(make_router):
    router = make_router()
    chunks = list(router.stream("tell me a story", tools=[EMAIL], tool_choice="none", max_new_tokens=24))
    result = chunks[-1].result
    assert result is not None and all(chunk.result is None for chunk in chunks[:-1])
    assert len(chunks) > 3 and "".join(chunk.text for chunk in chunks) == result.text
    routed = router.route("tell me a story", tools=[EMAIL], tool_choice="none", max_new_tokens=24)
    assert result.text == routed.text and result.finish_reason == routed.finish_reason


def test_a_streamed_call_comes_with_the_result(make_router):
    router = make_router()
    chunks = list(router.stream("email bob", tools=[EMAIL], tool_choice="required", max_new_tokens=200))
    assert len(chunks) == 1 and chunks[0].result.raw.startswith("[") and not chunks[0].text


def test_leaving_a_stream_early_ends_its_answer(make_router, tokenizer):
    router = make_router()
    stream = router.stream("tell me a story", tools=[], max_new_tokens=200)
    assert next(stream).text
    stream.close()  # nothing raises; the decoding thread ends the answer at its next token
    cancelled = TextStream(tokenizer)
    assert cancelled.feed([tokenizer.eos_token_id - 1]) is True
    cancelled.cancel()
    assert cancelled.feed([tokenizer.eos_token_id - 1]) is False


def test_concurrent_async_streams_each_get_their_own_answer(make_router):
    router = make_router()
    queries = ["tell me a story", "say something else entirely"]
    expected = [router.route(q, tools=[], max_new_tokens=16).text for q in queries]

    async def read(query):
        return [chunk async for chunk in router.astream(query, tools=[], max_new_tokens=16)]

    async def main():
        return await asyncio.gather(*(read(q) for q in queries))

    for chunks, text in zip(asyncio.run(main()), expected):
        assert chunks[-1].result.text == text == "".join(chunk.text for chunk in chunks)
    router.close()
