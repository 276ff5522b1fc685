"""`scratchllm generate` and `scratchllm chat` on a tiny saved run (chat is fed through stdin)."""

from __future__ import annotations

import io

import pytest
import torch

from scratchllm.cli import main
from scratchllm.errors import ConfigError
from scratchllm.generation import GREEDY, Engine, generate, left_pad
from scratchllm.generation.chat import ChatSession, PlainTemplate
from scratchllm.train.checkpoint import save_run


@pytest.fixture
def run_dir(tmp_path, model, tokenizer):
    save_run(tmp_path / "run", model, model.cfg, tokenizer)
    return tmp_path / "run"


def test_generate_flags_stream_and_seed(run_dir, capsys):
    common = ["generate", "--run", str(run_dir), "--prompt", "Hi", "--max-new-tokens", "8"]
    flags = ["--top-p", "0.9", "--min-p", "0.05", "--repetition-penalty", "1.2", "--seed", "4"]
    assert main(common + flags) == 0
    plain = capsys.readouterr().out
    assert main(common + flags + ["--stream"]) == 0
    assert capsys.readouterr().out == plain  # same seed, same text, streamed or not
    assert plain.startswith("Hi")


def test_generate_stream_seeds_each_prompt_as_the_batch_does(run_dir, capsys):
    args = ["generate", "--run", str(run_dir), "--prompt", "Hi", "--prompt", "Yo", "--seed", "4"]
    assert main(args + ["--max-new-tokens", "8"]) == 0
    batched = [line for line in capsys.readouterr().out.splitlines() if not line.startswith("---")]
    assert main(args + ["--max-new-tokens", "8", "--stream"]) == 0
    assert capsys.readouterr().out.splitlines() == batched


def test_generate_batch_of_prompts(run_dir, capsys, model, tokenizer):
    args = ["generate", "--run", str(run_dir), "--prompt", "a", "--prompt", "bcd"]
    assert main(args + ["--temperature", "0", "--max-new-tokens", "4"]) == 0
    # each prompt's greedy continuation is the naive reference decoder's, under its own header
    idx, mask = left_pad([tokenizer.encode("a"), tokenizer.encode("bcd")])
    new = generate(model, idx, 4, GREEDY, attention_mask=mask)[:, idx.shape[1] :].tolist()
    assert capsys.readouterr().out == "".join(
        f"--- [{i}] (length, 4 tokens)\n{prompt}{tokenizer.decode(ids)}\n"
        for i, (prompt, ids) in enumerate(zip(["a", "bcd"], new))
    )


def test_a_special_token_in_a_prompt_is_refused_unless_allowed(run_dir, capsys, model, tokenizer):
    """The refusal named Python arguments (allowed_special=...) no CLI user can pass."""
    eot = tokenizer.decode([tokenizer.eot_id])
    args = ["generate", "--run", str(run_dir), "--prompt", f"a{eot}b", "--max-new-tokens", "3"]
    assert main([*args, "--temperature", "0"]) == 2
    err = capsys.readouterr().err
    assert err.strip().splitlines() == [
        f"scratchllm generate: error: the prompt contains the special token {eot!r} at "
        "character 1; pass --allow-special to encode special-token literals as their ids"
    ]
    assert main([*args, "--temperature", "0", "--allow-special"]) == 0
    ids = tokenizer.encode(f"a{eot}b", allowed_special="all")
    assert tokenizer.eot_id in ids
    new = generate(model, torch.tensor([ids]), 3, GREEDY)[0, len(ids) :].tolist()
    assert capsys.readouterr().out == f"a{eot}b{tokenizer.decode(new)}\n"
    assert main([*args, "--template"]) == 2
    assert "a user message in a template may not hold one" in capsys.readouterr().err


@pytest.mark.parametrize(
    "flag, value, field",
    [("--temperature", "-1", "temperature"), ("--top-p", "2", "top_p"), ("--top-k", "-3", "top_k")],
)
def test_generate_invalid_sampling_is_a_one_line_error(run_dir, capsys, flag, value, field):
    code = main(["generate", "--run", str(run_dir), "--prompt", "x", flag, value])
    err = capsys.readouterr().err
    assert code == 2 and field in err and len(err.strip().splitlines()) == 1


def test_generate_beyond_context_refuses_unless_told_to_slide(run_dir, capsys, model):
    n = str(model.cfg.context_length + 10)
    args = ["generate", "--run", str(run_dir), "--prompt", "x", "--max-new-tokens", n]
    assert main(args) == 2 and "context" in capsys.readouterr().err
    assert main(args + ["--overflow", "slide"]) == 0


def test_chat_reads_stdin_streams_and_handles_commands(run_dir, capsys, monkeypatch):
    lines = [
        "hello there",
        "/settings temperature=0 max_new_tokens=6",
        "/settings top_p=7",
        "/settings bogus=1",
        "again",
        "/reset",
        "/exit",
        "never read",
    ]
    monkeypatch.setattr("sys.stdin", io.StringIO("\n".join(lines) + "\n"))
    assert main(["chat", "--run", str(run_dir), "--max-new-tokens", "5", "--seed", "1"]) == 0
    out = capsys.readouterr().out
    assert "template: plain" in out
    assert out.count("bot> ") == 2
    assert "temperature=0.0" in out and "max_new_tokens=6" in out
    assert "error: top_p" in out and "unknown setting" in out
    assert "(conversation cleared)" in out


def test_chat_ends_at_end_of_input(run_dir, capsys, monkeypatch):
    monkeypatch.setattr("sys.stdin", io.StringIO("hi"))
    assert main(["chat", "--run", str(run_dir), "--max-new-tokens", "3"]) == 0


def test_chat_history_is_kept_and_trimmed_to_the_context(make_model, tokenizer):
    model = make_model("tiny", context_length=128)
    session = ChatSession(
        Engine(model, tokenizer),
        PlainTemplate(),
        system="Be brief.",
        sampling=GREEDY,
        max_new_tokens=8,
    )
    for turn in range(6):
        "".join(session.reply(f"message {turn}"))
        prompt = PlainTemplate().encode_prompt(tokenizer, session.messages[:-1])
        assert len(prompt) + 8 <= model.cfg.context_length  # what the last reply was given
    assert session.messages[0] == {"role": "system", "content": "Be brief."}
    assert session.messages[-2]["content"] == "message 5"  # the newest exchange is kept
    assert len(session.messages) < 13  # older exchanges were dropped
    session.reset()
    assert session.messages == [{"role": "system", "content": "Be brief."}]
    with pytest.raises(ValueError, match="does not fit"):
        "".join(session.reply("x" * model.cfg.context_length))
    assert len(session.messages) == 1  # the rejected message is not kept


def test_a_message_the_tokenizer_refuses_is_not_kept(make_model, tokenizer):
    """A message spelling a special token stayed in the history, so every later reply failed
    with the same error until /reset; a system text like that failed at every reply."""
    from scratchllm.errors import TokenizerError

    session = ChatSession(Engine(make_model("tiny"), tokenizer), PlainTemplate(), sampling=GREEDY)
    with pytest.raises(TokenizerError, match="special token"):
        "".join(session.reply("see <|endoftext|>"))
    assert session.messages == []
    "".join(session.reply("hello"))  # the conversation goes on
    assert [m["role"] for m in session.messages] == ["user", "assistant"]
    with pytest.raises(TokenizerError, match="special token"):
        ChatSession(Engine(make_model("tiny"), tokenizer), PlainTemplate(), system="<|endoftext|>")


def test_chat_uses_the_runs_saved_template(run_dir):
    from scratchllm.finetune.templates import get_template, save_template
    from scratchllm.generation.chat import template_for_run

    assert template_for_run(run_dir).name == "plain"
    save_template(get_template("alpaca"), run_dir)
    template = template_for_run(run_dir, system="sys")
    assert template.name == "alpaca" and "<|endoftext|>" in template.stop_strings


def test_generate_int8_matches_the_quantized_engine(run_dir, capsys, model, tokenizer):
    from scratchllm.generation.quantize import quantize_int8

    args = ["generate", "--run", str(run_dir), "--prompt", "ab", "--temperature", "0"]
    assert main(args + ["--max-new-tokens", "6", "--dtype", "int8"]) == 0
    out = capsys.readouterr().out
    expected = Engine(quantize_int8(model), tokenizer).generate(["ab"], GREEDY, 6)[0]
    assert out.strip() == ("ab" + expected.text).strip()


def test_generate_on_a_missing_device_is_a_one_line_error(run_dir, capsys):
    import torch

    if torch.cuda.is_available():
        pytest.skip("this machine has CUDA")
    code = main(["generate", "--run", str(run_dir), "--prompt", "x", "--device", "cuda"])
    err = capsys.readouterr().err
    assert code == 2 and "no CUDA device" in err and len(err.strip().splitlines()) == 1


def test_chat_default_reply_budget_fits_a_small_context(make_model, tokenizer):
    # No max_new_tokens: the reply may take up to half the context, and a long message gets
    # the room that is left instead of an error.
    model = make_model("tiny", context_length=64)  # byte tokens: "User: message 0" is 26
    session = ChatSession(Engine(model, tokenizer), PlainTemplate(), sampling=GREEDY)
    for turn in range(4):
        "".join(session.reply(f"message {turn}"))
        prompt = PlainTemplate().encode_prompt(tokenizer, session.messages[:-1])
        assert len(prompt) + 32 <= 64
    assert session.messages[-2]["content"] == "message 3"
    session.reset()
    session.messages.append({"role": "user", "content": "y" * 30})  # 47 tokens of prompt
    ids, budget = session.prompt_ids()
    assert len(ids) == 47 and budget == 64 - 47
    with pytest.raises(ConfigError, match="max_new_tokens"):
        ChatSession(Engine(model, tokenizer), PlainTemplate(), max_new_tokens=0)
    with pytest.raises(ConfigError, match="leaves no room .* 64-token context"):
        ChatSession(Engine(model, tokenizer), PlainTemplate(), max_new_tokens=64)


def test_chat_settings_reject_bad_values_and_keep_the_old_ones(run_dir, capsys, monkeypatch):
    lines = [
        "/settings temperature=none",
        "/settings max_new_tokens=-5",
        "/settings top_k=2.5",
        "/settings temperature=0 top_p=7",  # one bad value: nothing changes
        "/settings top_k=0 max_new_tokens=none seed=3",
        "hello",
        "/exit",
    ]
    monkeypatch.setattr("sys.stdin", io.StringIO("\n".join(lines) + "\n"))
    assert main(["chat", "--run", str(run_dir), "--max-new-tokens", "4"]) == 0
    out = capsys.readouterr().out
    assert "temperature cannot be none" in out
    assert "max_new_tokens must be >= 1" in out
    assert "top_k needs a whole number" in out
    assert "error: top_p" in out
    assert "temperature=0.7 top_k=None" in out and "max_new_tokens=auto seed=3" in out
    assert out.count("bot> ") == 1 and "Traceback" not in out


def test_plain_template_keeps_system_messages_in_order():
    template = PlainTemplate("Default rule.")
    user = {"role": "user", "content": "hi"}
    systems = [{"role": "system", "content": f"{n} rule."} for n in ("First", "Second")]
    rendered = template.render_prompt([*systems, user])
    assert rendered == "First rule.\n\nSecond rule.\n\nUser: hi\nAssistant:"
    # the template's own system text is the default, used once, when the messages have none
    assert template.render_prompt([user]) == "Default rule.\n\nUser: hi\nAssistant:"
