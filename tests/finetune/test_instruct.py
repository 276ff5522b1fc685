"""Instruction tuning: collate masks, record validation, reported skips, judge, end-to-end runs."""

import json
import random
import threading
from http.server import BaseHTTPRequestHandler, HTTPServer

import pytest
import torch

from scratchllm.errors import ConfigError, DataError
from scratchllm.finetune.instruct import (
    IGNORE_INDEX,
    Example,
    InstructConfig,
    collate,
    encode_conversations,
    finetune_instruct,
    judge_responses,
)
from scratchllm.finetune.instruct_data import (
    SkipReport,
    load_conversations,
    split_items,
)
from scratchllm.finetune.lora import LoRAConfig
from scratchllm.finetune.templates import get_template, load_template
from scratchllm.model import GPTModel, ModelConfig
from scratchllm.tokenizer import BPETokenizer
from scratchllm.train.checkpoint import load_run, save_run
from scratchllm.train.config import TrainConfig

P, R = False, True  # prompt / response flags


@pytest.fixture(scope="module")
def tok() -> BPETokenizer:
    return BPETokenizer.train("### Instruction: ### Response: word words " * 5, 280)


# ------------------------------------------------------------------------------------ collate


def test_collate_masks_exactly_the_intended_positions():
    eot = 9
    a = Example([1, 2, 3, 4, eot], [P, P, R, R, R])  # prompt 1 2, response 3 4 <eot>
    b = Example([5, 6, 7, eot, 8, eot], [P, R, R, R, P, R])  # two responses
    inputs, targets = collate([a, b], pad_id=eot)
    assert inputs.tolist() == [[1, 2, 3, 4, eot], [5, 6, 7, eot, 8]]
    X = IGNORE_INDEX
    # targets are the inputs shifted by one; prompt and padding targets are -100, while each
    # example's own final <eot> stays a target so the model learns to stop
    assert targets.tolist() == [[X, 3, 4, eot, X], [6, 7, eot, X, eot]]
    _, unmasked = collate([a, b], pad_id=eot, mask_prompt=False)
    assert unmasked.tolist() == [[2, 3, 4, eot, X], [6, 7, eot, 8, eot]]
    short_in, short_t = collate([a, b], pad_id=eot, max_length=3)  # truncation to the context
    assert short_in.tolist() == [[1, 2, 3], [5, 6, 7]] and short_t.tolist() == [
        [X, 3, 4],
        [6, 7, eot],
    ]


# ------------------------------------------------------------------------------------ records


def _write(path, records, jsonl=False):
    if jsonl:
        path.write_text("".join(json.dumps(r) + "\n" for r in records))
    else:
        path.write_text(json.dumps(records))
    return path


def test_both_record_forms_json_and_jsonl(tmp_path):
    alpaca = {"instruction": "Add.", "input": "1 2", "output": "3"}
    chat = {
        "messages": [{"role": "user", "content": "hi"}, {"role": "assistant", "content": "hey"}]
    }
    for jsonl in (False, True):
        convs = load_conversations(_write(tmp_path / f"d{jsonl}", [alpaca, chat], jsonl))
        assert convs[0] == [
            {"role": "user", "content": "Add.", "input": "1 2"},
            {"role": "assistant", "content": "3"},
        ]
        assert convs[1] == chat["messages"]


@pytest.mark.parametrize(
    "record, match",
    [
        ({"input": "x", "output": "y"}, "neither 'messages' nor 'instruction'"),
        ({"instruction": "x"}, "field 'output' is missing"),
        ({"instruction": 5, "output": "y"}, "field 'instruction' must be a string, got int"),
        ({"instruction": "x", "input": ["a"], "output": "y"}, "'input' must be a string"),
        (
            {"messages": [{"role": "user", "content": "x"}]},
            "last message must be from the assistant",
        ),
        ("just text", "must be an object"),
    ],
)
def test_bad_records_raise_naming_the_record(tmp_path, record, match):
    path = _write(
        tmp_path / "bad.jsonl", [{"instruction": "ok", "output": "ok"}, record], jsonl=True
    )
    with pytest.raises(DataError, match=f"bad.jsonl:2: .*{match}"):
        load_conversations(path)
    skips = SkipReport()
    assert len(load_conversations(path, skip_invalid=True, skips=skips)) == 1
    assert skips.total == 1 and "bad.jsonl:2" in skips.summary()


def test_invalid_json_names_the_line(tmp_path):
    (tmp_path / "x.jsonl").write_text('{"instruction": "a", "output": "b"}\n{oops\n')
    with pytest.raises(DataError, match="x.jsonl:2: invalid JSON"):
        load_conversations(tmp_path / "x.jsonl")


def test_overflow_is_skipped_and_counted_or_raises(tok):
    t = get_template("alpaca")
    short = [{"role": "user", "content": "a"}, {"role": "assistant", "content": "b"}]
    long = [{"role": "user", "content": "word " * 200}, {"role": "assistant", "content": "b"}]
    skips = SkipReport()
    kept = encode_conversations([short, long, short], t, tok, 128, skips=skips)
    assert len(kept) == 2 and skips.counts["longer than the context"] == 1
    assert "conversation 1" in skips.summary()
    with pytest.raises(DataError, match="conversation 1: longer than the context"):
        encode_conversations([short, long], t, tok, 128, on_overflow="error")
    with pytest.raises(ConfigError):
        encode_conversations([short], t, tok, 64, on_overflow="drop")


def test_truncate_keeps_the_start_of_a_long_answer_and_no_end_token(tok):
    t = get_template("alpaca")
    answer = [{"role": "user", "content": "a"}, {"role": "assistant", "content": "word " * 200}]
    prompt = [{"role": "user", "content": "word " * 200}, {"role": "assistant", "content": "b"}]
    full_ids, full_flags = t.encode(tok, answer)
    skips = SkipReport()
    kept = encode_conversations([answer, prompt], t, tok, 128, on_overflow="truncate", skips=skips)
    # the answer is cut to the context: the first 129 ids, learning stops where the cut is
    assert len(kept) == 1 and kept[0].ids == full_ids[:129]
    assert kept[0].response == full_flags[:129] and any(kept[0].response)
    assert kept[0].ids[-1] != full_ids[-1] == tok.eot_id
    # a prompt that fills the context leaves no response to learn from: skipped and counted
    assert skips.counts["longer than the context"] == 1 and "conversation 1" in skips.summary()


def test_split_is_seeded_and_complete():
    parts = split_items(list(range(100)), (0.85, 0.05, 0.10), seed=3)
    assert [len(p) for p in parts] == [85, 5, 10]
    assert sorted(sum(parts, [])) == list(range(100))
    assert parts == split_items(list(range(100)), (0.85, 0.05, 0.10), seed=3)


# -------------------------------------------------------------------------------------- judge


def test_judge_skipped_cleanly_when_nothing_answers():
    messages = []
    rows = [{"prompt": "p", "reference": "r", "response": "x"}]
    assert judge_responses(rows, "http://127.0.0.1:9/v1", log=messages.append, timeout=2) is None
    assert "no OpenAI-compatible endpoint answered" in messages[0]


def test_judge_scores_from_a_local_endpoint():
    class Handler(BaseHTTPRequestHandler):
        def do_POST(self):
            body = json.loads(self.rfile.read(int(self.headers["Content-Length"])))
            assert self.path == "/v1/chat/completions" and body["messages"][0]["role"] == "user"
            reply = {"choices": [{"message": {"role": "assistant", "content": "Score: 85"}}]}
            data = json.dumps(reply).encode()
            self.send_response(200)
            self.send_header("Content-Length", str(len(data)))
            self.end_headers()
            self.wfile.write(data)

        def log_message(self, *args):
            pass

    server = HTTPServer(("127.0.0.1", 0), Handler)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    try:
        rows = [{"prompt": "p", "reference": "r", "response": "x"}] * 2
        url = f"http://127.0.0.1:{server.server_port}/v1"
        assert judge_responses(rows, url, log=lambda m: None) == [85, 85]
    finally:
        server.shutdown()


# --------------------------------------------------------------------------------- end to end

WORDS = "red blue green cat dog sun moon tree fish bird".split()
SYSTEM = "Reverse."  # a short preamble keeps the sequences (and the test) short


def _reverse_task(tmp_path, n_records=None):
    """Records 'reverse these 3 words' and a randomly initialised base run with its tokenizer."""
    rng = random.Random(0)
    combos = sorted({tuple(rng.sample(WORDS, 3)) for _ in range(2000)})
    rng.shuffle(combos)
    records = [
        {"instruction": "Reverse the words.", "input": ",".join(c), "output": ",".join(c[::-1])}
        for c in combos[:n_records]
    ]
    _write(tmp_path / "data.json", records)
    template = get_template("alpaca", SYSTEM)
    texts = [
        template.render(
            [
                {"role": "user", "content": r["instruction"], "input": r["input"]},
                {"role": "assistant", "content": r["output"]},
            ]
        ).replace("<|endoftext|>", "")
        for r in records
    ]
    tok = BPETokenizer.train(texts, 400)
    cfg = ModelConfig(vocab_size=tok.vocab_size, context_length=40, n_embd=64, n_layer=2, n_head=4)
    torch.manual_seed(0)
    save_run(tmp_path / "base", GPTModel(cfg), cfg, tok)
    return tmp_path / "base", tmp_path / "data.json"


def _train_cfg(steps, **kw):
    settings = dict(
        max_steps=steps,
        batch_size=16,
        lr=1e-2,
        min_lr=1e-4,
        warmup_steps=20,
        eval_interval=50,
        log_interval=50,
        weight_decay=0.0,
        device="cpu",
        seed=0,
    )
    return TrainConfig(**{**settings, **kw})


@pytest.fixture
def one_thread():
    """One thread: on a shared 2-core machine, two threads per process only contend."""
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


def test_reverse_words_reaches_90_percent_exact_match(tmp_path, one_thread):
    """Template, prompt masking, EOT and greedy generation working together on held-out prompts."""
    base, data = _reverse_task(tmp_path)
    cfg = InstructConfig(system=SYSTEM, max_new_tokens=12)
    # lr 3e-3: at 1e-2 this passed on an AMD machine but reached 0-56% exact match on an Intel
    # one (seeds 0-2); at 3e-3 every one of seeds 0-7 reached 100% there.
    train = _train_cfg(400, lr=3e-3)
    report = finetune_instruct(
        base, data, tmp_path / "sft", cfg, train, progress=False, log=lambda m: None
    )
    assert report.sizes == {"train": 578, "val": 34, "test": 68}
    assert report.exact_match >= 0.9, report.responses[:5]
    assert report.stop_rate == 1.0
    val = [r["val_loss"] for r in report.result.history if "val_loss" in r]
    assert val[-1] < val[0] / 10
    # the run is an ordinary run plus its template; responses were written
    run = load_run(tmp_path / "sft")
    assert run.model.cfg.vocab_size == run.tokenizer.vocab_size
    assert load_template(tmp_path / "sft").system == SYSTEM
    lines = (tmp_path / "sft" / "responses.jsonl").read_text().splitlines()
    assert len(lines) == 68 and {"prompt", "reference", "response", "stopped"} <= set(
        json.loads(lines[0])
    )


def test_lora_run_saves_adapter_and_merges(tmp_path, one_thread):
    from scratchllm.cli import main

    base, data = _reverse_task(tmp_path, n_records=120)
    base_weights = (base / "model.safetensors").read_bytes()
    cfg = InstructConfig(
        system=SYSTEM, max_new_tokens=4, max_responses=3, lora=LoRAConfig(r=4, alpha=8)
    )
    report = finetune_instruct(
        base,
        data,
        tmp_path / "lora",
        cfg,
        _train_cfg(8, save_interval=4),
        progress=False,
        log=lambda m: None,
    )
    out = tmp_path / "lora"
    assert (out / "adapter.safetensors").exists() and not (out / "model.safetensors").exists()
    assert (base / "model.safetensors").read_bytes() == base_weights
    assert len(report.responses) == 3
    assert main(["lora", "merge", "--run", str(out)]) == 0
    merged = load_run(out)
    assert not any("lora" in k for k in merged.model.state_dict())
    # resume continues from the newest checkpoint in the output directory
    resumed = finetune_instruct(
        base,
        data,
        out,
        InstructConfig(**{**cfg.__dict__, "resume": True}),
        _train_cfg(10, save_interval=4),
        progress=False,
        log=lambda m: None,
    )
    assert resumed.result.step == 10 and resumed.result.tokens > report.result.tokens


# ------------------------------------------------------------------------------ CLI and data


def test_cli_help_and_one_line_errors(tmp_path, capsys):
    from scratchllm.cli import main

    for argv in (["finetune", "instruct"], ["finetune", "dpo"], ["lora", "merge"]):
        with pytest.raises(SystemExit) as exc:
            main([*argv, "--help"])
        assert exc.value.code == 0
    assert "--lora-r" in capsys.readouterr().out
    (tmp_path / "bad.json").write_text('[{"instruction": "x"}]')
    code = main(
        [
            "finetune",
            "instruct",
            "--base",
            str(tmp_path),
            "--data",
            str(tmp_path / "bad.json"),
            "--out",
            str(tmp_path / "o"),
            "--template",
            "alpaca",
        ]
    )
    err = capsys.readouterr().err
    assert code == 2 and "bad.json:1 (record 1): field 'output' is missing" in err
    assert main(["lora", "merge", "--run", str(tmp_path)]) == 2


@pytest.mark.parametrize(
    ("flag", "value", "message"),
    [
        ("--max-responses", "-1", "argument --max-responses: must be >= 0, got -1"),
        ("--max-new-tokens", "0", "argument --max-new-tokens: must be >= 1, got 0"),
    ],
)
def test_cli_rejects_out_of_range_counts(tmp_path, capsys, flag, value, message):
    from scratchllm.cli import main

    argv = ["finetune", "instruct", "--base", str(tmp_path), "--data", "x.json"]
    with pytest.raises(SystemExit) as exc:
        main([*argv, "--out", str(tmp_path / "o"), flag, value])
    assert exc.value.code == 2 and message in capsys.readouterr().err


def test_instruct_config_rejects_out_of_range_counts():
    with pytest.raises(ConfigError, match="max_responses must be >= 0"):
        InstructConfig(max_responses=-1)
    with pytest.raises(ConfigError, match="max_new_tokens must be >= 1"):
        InstructConfig(max_new_tokens=0)
    assert InstructConfig(max_responses=0).max_responses == 0


def test_shared_instruction_data_loads_and_splits(shared_data):
    convs = load_conversations(shared_data / "instruction-data.json")
    parts = split_items(convs, (0.85, 0.05, 0.10), seed=123)
    assert [len(p) for p in parts] == [935, 55, 110]
    assert all(c[-1]["role"] == "assistant" for c in convs)
    from scratchllm.finetune.preference import load_pairs

    pairs = load_pairs(shared_data / "instruction-data-with-preference.json")
    assert len(pairs) == 1100 and all(p.chosen != p.rejected for p in pairs[:50])


@pytest.mark.parametrize(
    ("content", "pattern"),
    [
        ("[]", r"e\.json: no records"),
        ("  \n", r"e\.json: no records"),
        (
            '{\n  "instruction": "a",\n  "output": "b"\n}\n',
            r"e\.json: one JSON object, not a list of records: .*JSON array.*JSON Lines",
        ),
        ('[{"instruction": "a", "output": "b"},\n {"oops"}]', r"e\.json:2: invalid JSON"),
    ],
)
def test_empty_or_misshapen_files_are_named(tmp_path, content, pattern):
    (tmp_path / "e.json").write_text(content)
    with pytest.raises(DataError, match=pattern):
        load_conversations(tmp_path / "e.json")


def test_json_array_errors_name_the_line_and_record(tmp_path):
    records = [{"instruction": "a", "output": "b"}] * 2 + [{"instruction": "c"}]
    path = tmp_path / "d.json"
    path.write_text(json.dumps(records, indent=2))  # the third record starts on line 10
    with pytest.raises(DataError, match=r"d\.json:10 \(record 3\): field 'output' is missing"):
        load_conversations(path)
    skips = SkipReport()
    assert len(load_conversations(path, skip_invalid=True, skips=skips)) == 2
    assert skips.counts == {"field 'output' is missing": 1}


def test_a_byte_order_mark_is_accepted(tmp_path):
    path = tmp_path / "bom.json"
    path.write_bytes(b"\xef\xbb\xbf" + json.dumps([{"instruction": "a", "output": "b"}]).encode())
    assert len(load_conversations(path)) == 1


def test_json_lines_records_may_hold_unicode_line_separators(tmp_path):
    records = [{"instruction": "a\u2028b", "output": "c\x85d"}, {"instruction": "e", "output": "f"}]
    path = tmp_path / "d.jsonl"
    path.write_text("".join(json.dumps(r, ensure_ascii=False) + "\n" for r in records))
    convs = load_conversations(path)
    assert [c[0]["content"] for c in convs] == ["a\u2028b", "e"]
    assert convs[0][1]["content"] == "c\x85d"


@pytest.mark.parametrize(
    ("kwargs", "match"),
    [
        ({"split": (0.9, 0.2, 0.1)}, "sum to 1"),
        ({"on_overflow": "drop"}, "on_overflow='drop'"),
        # found only after training: urllib's "unknown url type", or a file:// URL read quietly
        ({"judge_url": "localhost:8000/v1"}, "must be an http"),
        ({"judge_url": "notaurl"}, "must be an http"),
        ({"judge_url": "file:///etc/passwd"}, "must be an http"),
    ],
)
def test_instruct_config_checks_split_and_overflow_up_front(kwargs, match):
    with pytest.raises(ConfigError, match=match):
        InstructConfig(**kwargs)


def test_a_record_longer_than_the_context_is_named_by_file_and_line(tmp_path, tok):
    cfg = ModelConfig(vocab_size=tok.vocab_size, context_length=48, n_embd=16, n_layer=1, n_head=2)
    save_run(tmp_path / "base", GPTModel(cfg), cfg, tok)
    records = [{"instruction": "word", "output": "words"}] * 6
    records[3] = {"instruction": "word " * 60, "output": "words"}
    data = _write(tmp_path / "d.jsonl", records, jsonl=True)
    settings = InstructConfig(system="Reverse.", split=(1.0, 0.0, 0.0), on_overflow="error")
    train = TrainConfig(max_steps=1, batch_size=2, device="cpu")
    with pytest.raises(DataError, match=r"d\.jsonl:4: longer than the context"):
        finetune_instruct(tmp_path / "base", data, tmp_path / "o", settings, train, log=print)
    # skipped instead: the summary names the same line
    lines = []
    settings = InstructConfig(system="Reverse.", split=(1.0, 0.0, 0.0), max_responses=0)
    finetune_instruct(
        tmp_path / "base", data, tmp_path / "o", settings, train, log=lines.append, progress=False
    )
    assert any(
        "skipped 1 record(s)" in m and "d.jsonl:4: longer than the context" in m for m in lines
    )


def test_dpo_pairs_longer_than_the_context_are_named_by_file_and_line(tmp_path, tok):
    from scratchllm.finetune.preference import encode_pairs, load_pairs

    records = [{"instruction": "word", "chosen": "words", "rejected": "word"}] * 3
    records[1] = {"instruction": "word", "chosen": "words " * 60, "rejected": "word"}
    pairs = load_pairs(_write(tmp_path / "p.json", records))
    skips = SkipReport()
    assert len(encode_pairs(pairs, get_template("alpaca", "Reverse."), tok, 48, skips)) == 2
    assert "p.json:1 (record 2): longer than the context" in skips.summary()
