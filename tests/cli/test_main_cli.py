"""The CLI as a user meets it: --help everywhere, a tiny train-then-generate run, clean errors."""

import argparse
import subprocess
import sys

import pytest

from scratchllm.cli import build_parser, main


def _all_command_paths(parser=None, prefix=()):
    parser = parser or build_parser()
    for action in parser._actions:
        if isinstance(action, argparse._SubParsersAction):
            for name, sub in action.choices.items():
                yield (*prefix, name)
                yield from _all_command_paths(sub, (*prefix, name))


COMMANDS = sorted(set(_all_command_paths()))


@pytest.mark.parametrize("command", COMMANDS, ids=" ".join)
def test_every_command_has_help(command, capsys):
    with pytest.raises(SystemExit) as exit_info:
        main([*command, "--help"])
    assert exit_info.value.code == 0
    out = capsys.readouterr().out
    assert out.startswith("usage: scratchllm " + " ".join(command))
    assert len(out.splitlines()) > 3


def test_core_commands_are_registered():
    assert {("demo",), ("train",), ("generate",)} <= set(COMMANDS)


def _write_corpus(directory, n_docs=6):
    directory.mkdir()
    sentences = [
        "The quick brown fox jumps over the lazy dog. ",
        "A function returns a value to its caller. ",
        "Every list keeps its items in order. ",
    ]
    for i in range(n_docs):
        text = "".join(sentences[(i + j) % 3] for j in range(60))
        (directory / f"doc{i}.txt").write_text(text)
    (directory / "notes.md").write_text("# Notes\n\n" + sentences[0] * 30)
    return directory


def test_train_then_generate_end_to_end(tmp_path, capsys):
    corpus = _write_corpus(tmp_path / "corpus")
    run = tmp_path / "run"
    code = main(
        [
            "train",
            "--data",
            str(corpus),
            "--out",
            str(run),
            "--steps",
            "8",
            "--batch-size",
            "4",
            "--n-layer",
            "1",
            "--n-embd",
            "32",
            "--n-head",
            "2",
            "--context-length",
            "16",
            "--vocab-size",
            "300",
            "--eval-interval",
            "4",
            "--no-progress",
            "--prompt",
            "The quick",
        ]
    )
    out = capsys.readouterr().out
    assert code == 0
    assert "validation loss:" in out and "unigram baseline" in out
    for name in (
        "config.json",
        "model.safetensors",
        "tokenizer.json",
        "metrics.jsonl",
        "loss.png",
        "train_config.json",
    ):
        assert (run / name).is_file(), name
    code = main(
        [
            "generate",
            "--run",
            str(run),
            "--prompt",
            "The quick",
            "--seed",
            "3",
            "--max-new-tokens",
            "8",
        ]
    )
    first = capsys.readouterr().out
    assert code == 0 and first.startswith("The quick")
    main(
        [
            "generate",
            "--run",
            str(run),
            "--prompt",
            "The quick",
            "--seed",
            "3",
            "--max-new-tokens",
            "8",
        ]
    )
    assert capsys.readouterr().out == first  # same seed, same text
    # past the 16-token context: an error by default, a sliding window on request
    too_long = ["generate", "--run", str(run), "--prompt", "The quick", "--max-new-tokens", "40"]
    assert main(too_long) == 2
    assert "context" in capsys.readouterr().err
    assert main([*too_long, "--overflow", "slide", "--seed", "1"]) == 0


def _run_cli(*args):
    return subprocess.run(
        [sys.executable, "-m", "scratchllm", *args], capture_output=True, text=True, timeout=300
    )


def test_missing_data_path_is_a_one_line_error(tmp_path):
    missing = tmp_path / "no-such-corpus"
    proc = _run_cli("train", "--data", str(missing), "--out", str(tmp_path / "run"))
    assert proc.returncode == 2
    assert str(missing) in proc.stderr
    assert "Traceback" not in proc.stderr and len(proc.stderr.strip().splitlines()) == 1


def test_empty_corpus_is_a_clear_error(tmp_path, capsys):
    corpus = tmp_path / "empty"
    corpus.mkdir()
    (corpus / "a.txt").write_text("")
    code = main(["train", "--data", str(corpus), "--out", str(tmp_path / "run")])
    err = capsys.readouterr().err
    assert code == 2 and str(corpus) in err and "Traceback" not in err


def test_corpus_too_small_for_one_window_names_the_numbers(tmp_path, capsys):
    corpus = tmp_path / "small.txt"
    corpus.write_text("Just a few words here.")
    code = main(
        [
            "train",
            "--data",
            str(corpus),
            "--out",
            str(tmp_path / "run"),
            "--context-length",
            "64",
            "--vocab-size",
            "260",
            "--no-progress",
        ]
    )
    err = capsys.readouterr().err
    assert code == 2
    assert "65" in err and "tokens" in err  # needs max_length + 1 = 65 tokens


def test_generate_from_missing_run_is_a_clear_error(tmp_path, capsys):
    code = main(["generate", "--run", str(tmp_path / "nope"), "--prompt", "x"])
    assert code == 2 and "nope" in capsys.readouterr().err


def test_short_runs_warm_up_for_a_tenth_and_then_decay():
    from scratchllm.cli.common import train_config
    from scratchllm.train.optim import lr_at

    args = build_parser().parse_args(["train", "--data", "x", "--steps", "30"])
    cfg = train_config(args)
    assert cfg.warmup_steps == 3
    assert lr_at(29, cfg) < 0.2 * cfg.lr  # near the floor at the end, not at the peak


@pytest.mark.parametrize("minutes", ["-1", "0"])
def test_max_minutes_must_be_positive(tmp_path, capsys, minutes):
    corpus = tmp_path / "c.txt"
    corpus.write_text("hello world " * 200)
    argv = ["train", "--data", str(corpus), "--out", str(tmp_path / "r"), "--max-minutes", minutes]
    assert main(argv) == 2
    err = capsys.readouterr().err
    assert "--max-minutes must be > 0" in err and len(err.strip().splitlines()) == 1


@pytest.mark.parametrize(
    "exc,expected",
    [
        (ValueError("max_new_tokens must be >= 1, got 0"), "max_new_tokens must be >= 1, got 0"),
        (IsADirectoryError(21, "Is a directory", "some/dir"), "Is a directory: some/dir"),
    ],
)
def test_value_and_os_errors_are_one_line_with_exit_2(monkeypatch, capsys, exc, expected):
    def fail(args):
        raise exc

    parser = build_parser()
    args = parser.parse_args(["model", "info", "--preset", "tiny"])
    monkeypatch.setattr("scratchllm.cli.build_parser", lambda: _Fixed(parser, args, fail))
    assert main([]) == 2
    assert capsys.readouterr().err == f"scratchllm model: error: {expected}\n"
    monkeypatch.setenv("SCRATCHLLM_DEBUG", "1")
    with pytest.raises(type(exc)):
        main([])


class _Fixed:
    """A parser stand-in that always returns ``args`` with ``func`` replaced."""

    def __init__(self, parser, args, func):
        self.parser, self.args = parser, args
        self.args.func = func

    def parse_args(self, argv):
        return self.args


def test_the_follow_up_command_is_one_that_runs(monkeypatch, tmp_path):
    from scratchllm.cli.common import command_name

    script = tmp_path / ".venv" / "bin" / "scratchllm"
    script.parent.mkdir(parents=True)
    script.write_text("#!/bin/sh\n")
    monkeypatch.chdir(tmp_path)
    monkeypatch.setenv("PATH", "/nonexistent")
    monkeypatch.setattr("sys.argv", [str(script)])
    assert command_name() == ".venv/bin/scratchllm"
    monkeypatch.setattr("sys.argv", ["-c"])
    assert command_name() == "python -m scratchllm"
    monkeypatch.setenv("PATH", str(script.parent))
    script.chmod(0o755)
    assert command_name() == "scratchllm"


@pytest.mark.parametrize("command", ["train", "demo"])
def test_max_minutes_none_lifts_the_time_limit(command):
    """`--help` says "none = no limit"; demo's default of 7 minutes can be lifted that way."""
    from scratchllm.cli.common import train_config

    extra = ["--data", "x"] if command == "train" else []
    args = build_parser().parse_args([command, *extra, "--max-minutes", "none"])
    assert train_config(args).max_seconds is None
    args = build_parser().parse_args([command, *extra, "--max-minutes", "2.5"])
    assert train_config(args).max_seconds == 150


@pytest.mark.parametrize(
    "argv",
    [
        ["tokenizer", "encode", "--tokenizer", "{tok}", "--file", "{file}"],
        ["tokenizer", "show", "--tokenizer", "{tok}", "--file", "{file}"],
        ["tokenizer", "info", "--tokenizer", "{tok}", "--file", "{file}"],
        ["embed", "text", "--run", "{missing}", "--file", "{file}"],
        ["serve", "--run", "{missing}", "--port", "0", "--api-key-file", "{file}"],
    ],
    ids=lambda argv: " ".join(argv[:2]),
)
def test_a_named_file_that_is_not_utf8_is_named_in_the_error(tmp_path, capsys, argv):
    from scratchllm.tokenizer import WordTokenizer

    tok = WordTokenizer.train(["a b c"], mode="char").save(tmp_path / "tok")
    latin1 = tmp_path / "latin1.txt"
    latin1.write_bytes(b"caf\xe9 au lait\n")
    paths = {"tok": tok, "file": latin1, "missing": tmp_path / "no-run"}
    assert main([arg.format(**paths) for arg in argv]) == 2
    err = capsys.readouterr().err
    assert len(err.strip().splitlines()) == 1
    assert f"{latin1}: not UTF-8 text (invalid continuation byte at byte 3)" in err


@pytest.mark.parametrize(
    "argv,message",
    [
        (["train", "--data", "{corpus}", "--out", "{blocked}"], "Not a directory: {blocked}"),
        (
            ["train", "--data", "{corpus}", "--out", "{run}", "--context-length", "0"],
            "context_length=0 must be a positive integer",
        ),
        (
            ["tokenizer", "train", "--data", "{corpus}", "--out", "{blocked}"],
            "Not a directory: {blocked}",
        ),
        (
            ["embed", "word2vec", "--data", "{corpus}", "--out", "{blocked}", "--no-progress"],
            "Not a directory: {blocked}",
        ),
    ],
    ids=["train-out", "train-model", "tokenizer-out", "word2vec-out"],
)
def test_an_unusable_out_or_model_fails_before_any_training(
    tmp_path, capsys, monkeypatch, argv, message
):
    """--out below a regular file, or a bad model setting, used to be found only after the
    tokenizer (train, tokenizer train) or the whole model (embed word2vec) had trained."""
    from scratchllm.tokenizer.bpe import BPETokenizer
    from scratchllm.tokenizer.simple import WordTokenizer
    from scratchllm.train.loop import Trainer

    def no_training(*args, **kwargs):
        raise AssertionError("trained before the bad --out or model setting was reported")

    for cls in (BPETokenizer, WordTokenizer):
        monkeypatch.setattr(cls, "train", no_training)
    monkeypatch.setattr(Trainer, "fit", no_training)
    corpus = _write_corpus(tmp_path / "corpus", n_docs=1)
    (tmp_path / "file").write_text("a file, not a directory")
    paths = {"corpus": corpus, "blocked": tmp_path / "file" / "out", "run": tmp_path / "run"}
    assert main([arg.format(**paths) for arg in argv]) == 2
    err = capsys.readouterr().err.strip()
    assert err.endswith(message.format(**paths)) and len(err.splitlines()) == 1


def test_a_prompt_the_tokenizer_refuses_fails_before_training(tmp_path, capsys, monkeypatch):
    """`train --prompt 'a <|endoftext|>'` failed at the first sample, mid-training, and the run
    was never saved."""
    from scratchllm.train.loop import Trainer

    def no_training(*args, **kwargs):
        raise AssertionError("trained before the bad --prompt was reported")

    monkeypatch.setattr(Trainer, "fit", no_training)
    corpus = _write_corpus(tmp_path / "corpus", n_docs=2)
    argv = ["train", "--data", str(corpus), "--out", str(tmp_path / "run"), "--vocab-size", "300"]
    assert main([*argv, "--prompt", "fine", "--prompt", "a <|endoftext|>"]) == 2
    err = capsys.readouterr().err.strip()
    assert "special token '<|endoftext|>'" in err and len(err.splitlines()) == 1


def test_a_train_that_fails_on_its_data_leaves_no_empty_run_directory(tmp_path, capsys):
    """`train` makes --out before the tokenizer trains (so that an unusable one fails early); a
    corpus found too small afterwards left that directory behind, empty."""
    corpus = tmp_path / "corpus"
    corpus.mkdir()
    (corpus / "tiny.txt").write_text("far too little text to make a training window. " * 3)
    run = tmp_path / "run"
    argv = ["train", "--data", str(corpus), "--out", str(run), "--vocab-size", "260"]
    assert main([*argv, "--no-progress"]) == 2
    assert "training split too small" in capsys.readouterr().err
    assert not run.exists()
    run.mkdir()  # a directory the user made is left alone
    assert main([*argv, "--no-progress"]) == 2
    assert run.is_dir()


def test_an_output_below_a_file_says_the_file_is_not_a_directory(tmp_path, capsys):
    """`plot --out FILE/x.png` said "File exists: FILE" (mkdir of the output's folder)."""
    run = tmp_path / "run"
    run.mkdir()
    (run / "metrics.jsonl").write_text('{"step": 1, "loss": 2.0}\n{"step": 2, "loss": 1.5}\n')
    blocker = tmp_path / "file"
    blocker.write_text("not a directory")
    assert main(["plot", str(run), "--out", str(blocker / "x.png")]) == 2
    err = capsys.readouterr().err.strip()
    assert err.splitlines() == [f"scratchllm plot: error: {blocker} exists and is not a directory"]
