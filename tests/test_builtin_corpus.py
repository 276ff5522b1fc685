from scratchllm.data.builtin import builtin_documents


def test_builtin_corpus_is_large_deterministic_english_prose():
    docs = builtin_documents()
    total = sum(len(d.text) for d in docs)
    assert total >= 1_000_000, total
    assert len({d.name for d in docs}) == len(docs)  # names are unique (they drive the split)
    again = builtin_documents()
    assert [(d.name, d.text) for d in again] == [(d.name, d.text) for d in docs]
    text = " ".join(d.text for d in docs[:50]).lower()
    for word in (" the ", " is ", " of ", " and "):
        assert text.count(word) > 100
