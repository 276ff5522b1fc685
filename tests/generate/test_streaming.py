"""Streaming never splits a UTF-8 character and never shows part of a stop string."""

from __future__ import annotations

from hypothesis import given, settings
from hypothesis import strategies as st

from scratchllm.generation import GREEDY, Engine, TextStream


class ChunkTokenizer:
    """Token i is ``pieces[i]``: arbitrary byte chunks, cut anywhere inside characters."""

    eot_id = None

    def __init__(self, pieces: list[bytes]) -> None:
        self.pieces = pieces

    def decode_bytes(self, ids) -> bytes:
        return b"".join(self.pieces[i] for i in ids)


def _chunks(data: bytes, cuts: list[int]) -> list[bytes]:
    points = sorted({0, len(data), *(c % (len(data) + 1) for c in cuts)})
    return [data[a:b] for a, b in zip(points, points[1:])]


def _stream(pieces: list[bytes], stop=()) -> tuple[list[str], TextStream]:
    stream = TextStream(ChunkTokenizer(pieces), stop)
    out = [stream.push([i]) for i in range(len(pieces))]
    out.append(stream.finish())
    return out, stream


def test_emoji_split_over_tokens_waits_for_its_last_byte():
    data = "a😀b".encode()  # the emoji is 4 bytes
    out, _ = _stream([data[:2], data[2:4], data[4:5], data[5:]])
    assert out == ["a", "", "😀", "b", ""]


@settings(max_examples=60, deadline=None)
@given(st.text(), st.lists(st.integers(min_value=0), max_size=12))
def test_pieces_are_whole_characters_and_concatenate_to_the_full_decode(text, cuts):
    data = text.encode("utf-8", errors="surrogatepass")
    pieces = _chunks(data, cuts)
    out, _ = _stream(pieces)
    expected = data.decode("utf-8", errors="replace")
    assert "".join(out) == expected
    if "\ufffd" not in expected:
        assert all("\ufffd" not in piece for piece in out)


@settings(max_examples=60, deadline=None)
@given(st.binary(max_size=40), st.lists(st.integers(min_value=0), max_size=12))
def test_invalid_bytes_decode_like_the_tokenizer(data, cuts):
    out, _ = _stream(_chunks(data, cuts))
    assert "".join(out) == data.decode("utf-8", errors="replace")


@settings(max_examples=60, deadline=None)
@given(
    st.text(alphabet="ab😀é\n", max_size=30),
    st.lists(st.text(alphabet="ab😀é\n", min_size=1, max_size=3), min_size=1, max_size=2),
    st.lists(st.integers(min_value=0), max_size=12),
)
def test_stop_strings_cut_the_text_before_the_first_one(text, stops, cuts):
    pieces = _chunks(text.encode(), cuts)
    out, stream = _stream(pieces, stops)
    # Generation ends at the first token after which a stop string is in the text: the text is
    # cut at the earliest stop string present at that point.
    expected, stopped, seen = text, False, b""
    for piece in pieces:
        seen += piece
        so_far = seen.decode("utf-8", errors="ignore")  # whole characters only
        found = [i for i in (so_far.find(s) for s in stops) if i >= 0]
        if found:
            expected, stopped = so_far[: min(found)], True
            break
    assert "".join(out) == expected == stream.text
    assert stream.stopped == stopped
    # no piece ever showed text a stop string later took back: every prefix is final
    shown = ""
    for piece in out:
        shown += piece
        assert expected.startswith(shown)


def test_engine_stream_equals_generate(model, tokenizer):
    engine = Engine(model, tokenizer)
    prompt = "héllo 😀"
    pieces = list(engine.stream(prompt, GREEDY, 30))
    (full,) = engine.generate([prompt], GREEDY, 30)
    assert "".join(pieces) == full.text == tokenizer.decode(full.token_ids)


def test_stopping_a_stream_early_frees_the_slot(model, tokenizer):
    engine = Engine(model, tokenizer)
    it = engine.stream("ab", GREEDY, 30)
    next(it)
    it.close()
    assert engine._batch is not None and engine._batch.num_active == 0
