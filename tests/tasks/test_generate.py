"""`revrnn generate` on a tiny trained quickstart run: deterministic under a seed, inside the
vocabulary, driven by evaluation's forward; prompt handling; the command line's outputs and errors."""

from __future__ import annotations

import json
import math
from pathlib import Path

import pytest
import torch

from revrnn_cli import cli, runner
from revrnn_cli.errors import EXIT_OK, EXIT_USAGE, UserError
from revrnn_cli.models.lm import RNNLanguageModel
from revrnn_cli.tasks.generate import LMWords, as_text, encode_prompt, generate, next_logits, run_words
from revrnn_cli.tasks.restore import restore

QUICKSTART = Path(__file__).resolve().parents[2] / "experiments" / "quickstart.yaml"
# a few seconds: the quickstart spec, shorter sequences, fewer of them, one epoch
TINY = ["data.seq_len=12", "data.n_train=256", "data.n_valid=64", "data.n_test=64", "train.epochs=1",
        "train.log_interval=4"]


@pytest.fixture(scope="module")
def run(tmp_path_factory) -> Path:
    out = tmp_path_factory.mktemp("gen") / "quickstart"
    runner.train(QUICKSTART, TINY, run_dir=out, progress=False)
    return out


def _main(argv) -> int:
    with pytest.raises(SystemExit) as e:
        cli.main([str(a) for a in argv])
    return e.value.code


def test_same_seed_same_words_within_the_vocabulary(run):
    a = generate(run, 40, temperature=1.0, seed=5)
    b = generate(run, 40, temperature=1.0, seed=5)
    assert a["words"] == b["words"] and len(a["words"]) == 40
    symbols = {str(i) for i in range(8)}  # quickstart: vocab_size 8; the input-only blank is never sampled
    assert set(a["words"]) <= symbols
    assert a["text"] == " ".join(a["words"])


def test_other_seeds_give_other_samples(run):
    samples = {tuple(generate(run, 30, temperature=3.0, seed=s)["words"]) for s in range(4)}
    assert len(samples) > 1


def test_temperature_zero_ignores_the_seed(run):
    assert generate(run, 20, temperature=0, seed=1, prompt="3 1")["words"] == \
        generate(run, 20, temperature=0, seed=2, prompt="3 1")["words"]


def test_the_sampled_distribution_is_evaluations(run):
    """Feeding a sequence word by word through next_logits gives the loss evaluation computes for it."""
    restored = restore(run, "generate")
    model = restored.load_weights(RNNLanguageModel(restored.spec.model, len(run_words(restored.spec).words)))
    gen = torch.Generator().manual_seed(0)
    tokens = torch.randint(0, 8, (25, 1), generator=gen)
    with torch.no_grad():
        expected = model.segment(tokens[:-1], tokens[1:]).loss_sum.item()
    total, state = 0.0, None
    for t in range(24):
        logits, state = next_logits(model, tokens[t : t + 1], state)
        total -= torch.log_softmax(logits[0], 0)[tokens[t + 1, 0]].item()
    assert math.isclose(total, expected, rel_tol=1e-5)


def test_prompt_words_outside_the_vocabulary():
    words = LMWords.of(["<eos>", "the", "<unk>", "cat"], unk="<unk>", start="<eos>")
    assert encode_prompt("the dog cat", words) == ([1, 2, 3], ["dog"])
    synthetic = LMWords.of(["0", "1", "<blank>"], unk=None, start=None, banned=("<blank>",))
    with pytest.raises(UserError, match="--prompt: 'x' is not in this run's vocabulary"):
        encode_prompt("0 x", synthetic)


def test_eos_ends_a_line():
    assert as_text(["a", "b", "<eos>", "c", "<eos>"]) == "a b\nc"


def test_cli_text_and_json(run, capsys):
    assert _main(["generate", run, "--words", "12", "--seed", "3", "--prompt", "1 2"]) == EXIT_OK
    out, err = capsys.readouterr()
    assert out.split() == ["1", "2", *generate(run, 12, seed=3, prompt="1 2")["words"]]
    assert "12 words" in err
    assert _main(["generate", run, "--words", "5", "--json"]) == EXIT_OK
    out, _ = capsys.readouterr()
    obj = json.loads(out)
    assert len(out.splitlines()) == 1 and len(obj["words"]) == 5 and obj["context"]


@pytest.mark.parametrize("args, needle", [
    (["--temperature", "-1"], "--temperature"),
    (["--words", "0"], "--words"),
    (["--prompt", "1 nine"], "--prompt"),
])
def test_cli_mistakes_are_one_line_exit_2(run, capsys, args, needle):
    assert _main(["generate", run, *args]) == EXIT_USAGE
    out, err = capsys.readouterr()
    assert out == "" and len(err.strip().splitlines()) == 1 and needle in err


def test_cli_missing_run(tmp_path, capsys):
    assert _main(["generate", tmp_path / "nope"]) == EXIT_USAGE
    _, err = capsys.readouterr()
    assert "nope" in err and len(err.strip().splitlines()) == 1
