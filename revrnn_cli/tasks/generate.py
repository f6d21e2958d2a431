"""Sampling text from a trained language model: what ``revrnn generate`` does.

    revrnn generate runs/ptb_revlstm_small --words 50 --seed 1
    revrnn generate runs/ptb_revlstm_small --prompt "the company said" --temperature 0.8 --json
    revrnn generate runs/quickstart --words 20            # synthetic task: the symbols 0..V-1

The words are drawn from the distribution whose perplexity ``evaluate`` reports: the model in eval
mode, without autograd, through the same forward as evaluation (embedding without dropout, the
recurrent stack's exact fixed-point forward, the tied softmax). A reversible stack run this way
pushes into its buffer as evaluation does and never reverses. The context is fed as one segment and
each sampled word as a one-step segment that carries the exact state, as evaluation carries it from
segment to segment.

Sampling uses its own ``torch.Generator`` on the CPU, so a seed gives the same words on any device
and whatever else the process draws. A corpus sample's context is ``<eos>`` and then the prompt, so
it starts at a sentence start; a synthetic-task sample without a prompt starts from a random
symbol. Prompt words outside the vocabulary become ``<unk>``, as the corpus does for rare words;
the synthetic tasks have no ``<unk>``, so there an unknown symbol is an error.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import torch
import torch.nn.functional as F

from ..data import EOS, load_lm_corpus, num_input_tokens
from ..errors import EXIT_DATA, UserError
from ..models.dropout import embed
from ..models.lm import RNNLanguageModel
from .restore import restore

UNK = "<unk>"
BLANK = "<blank>"  # the synthetic tasks' input-only marker: never a target, never sampled


@dataclass(frozen=True)
class LMWords:
    """The words of a run's vocabulary, and how sampling treats them."""

    words: tuple[str, ...]  # id -> word
    index: dict[str, int]
    unk: int | None  # id unknown prompt words map to (None: unknown words are an error)
    start: int | None  # context without a prompt (None: a random symbol)
    banned: tuple[int, ...] = ()  # ids never sampled

    @classmethod
    def of(cls, words, unk: str | None, start: str | None, banned=()) -> "LMWords":
        words = tuple(words)
        index = {w: i for i, w in enumerate(words)}
        return cls(words, index, index.get(unk) if unk else None, index.get(start) if start else None,
                   tuple(index[w] for w in banned))

    def describe(self) -> str:
        shown = [w for i, w in enumerate(self.words) if i not in self.banned]
        return ", ".join(shown) if len(shown) <= 12 else f"{len(shown)} words"


def run_words(spec) -> LMWords:
    """The vocabulary the run was trained with (a corpus's training words, or the synthetic symbols)."""
    data = spec.data
    if data.synthetic:
        symbols = [str(i) for i in range(num_input_tokens(data.vocab_size) - 1)]  # then the blank
        return LMWords.of([*symbols, BLANK], unk=None, start=None, banned=(BLANK,))
    vocab = load_lm_corpus(data.dataset, data.data_dir, download=data.download).vocab
    return LMWords.of(vocab.idx2word, unk=UNK if UNK in vocab else None, start=EOS)


def encode_prompt(text: str, words: LMWords) -> tuple[list[int], list[str]]:
    """Ids of the prompt's whitespace-separated words, and the words that were not in the vocabulary."""
    ids, unknown = [], []
    for w in text.split():
        if w in words.index:
            ids.append(words.index[w])
        elif words.unk is not None:
            ids.append(words.unk)
            unknown.append(w)
        else:
            raise UserError(f"--prompt: {w!r} is not in this run's vocabulary ({words.describe()})")
    return ids, unknown


@torch.no_grad()
def next_logits(model: RNNLanguageModel, tokens: torch.Tensor, state=None):
    """Logits [B, V] after the segment ``tokens`` [T, B], and the state after it: evaluation's forward
    (``model.segment`` in eval mode) up to the softmax of the last step."""
    x = embed(tokens, model.encoder.weight, None, None)  # eval: no embedding or input dropout
    y, state = model.rnn(x, state)
    return F.linear(y[-1], model.encoder.weight, model.decoder_bias), state


@torch.no_grad()
def sample(model: RNNLanguageModel, context: list[int], n: int, temperature: float, generator: torch.Generator,
           banned: tuple[int, ...] = ()) -> list[int]:
    """``n`` ids drawn one at a time after ``context``; temperature 0 takes the most likely word."""
    device = model.encoder.weight.device
    tokens = torch.tensor(context, dtype=torch.long, device=device).unsqueeze(1)
    logits, state = next_logits(model, tokens)
    out = []
    for _ in range(n):
        logits = logits[0].float().cpu()
        if banned:
            logits[list(banned)] = float("-inf")
        if temperature == 0:
            nxt = int(logits.argmax())
        else:
            nxt = int(torch.multinomial(torch.softmax(logits / temperature, 0), 1, generator=generator))
        out.append(nxt)
        logits, state = next_logits(model, torch.tensor([[nxt]], device=device), state)
    return out


def as_text(words: list[str]) -> str:
    """Sampled words as text: one sentence per line (``<eos>`` ends a line), words separated by spaces."""
    lines = " ".join(words).split(EOS)
    return "\n".join(line.strip() for line in lines).rstrip("\n")


def generate(target: Path, n_words: int = 100, temperature: float = 1.0, seed: int | None = None,
             prompt: str | None = None, data_dir: str | None = None) -> dict:
    """Sample ``n_words`` from the run at ``target`` (its ``best.pt``). Returns the settings, the sampled
    ``words`` and the ``text``: the prompt (as the model read it) continued by the sample."""
    if n_words < 1:
        raise UserError(f"--words must be at least 1, got {n_words}")
    if temperature < 0:
        raise UserError(f"--temperature must be >= 0 (0 = most likely word), got {temperature}")
    run = restore(target, "generate", data_dir=data_dir)
    words = run_words(run.spec)
    model = RNNLanguageModel(run.spec.model, len(words.words), run.spec.backprop)
    if model.encoder.weight.shape != run.payload["model"]["encoder.weight"].shape:
        raise UserError(f"{run.checkpoint}: its vocabulary has {run.payload['model']['encoder.weight'].shape[0]} "
                        f"words but the run's data give {len(words.words)}: the data changed since training",
                        exit_code=EXIT_DATA)
    run.load_weights(model)
    seed = run.spec.seed if seed is None else seed
    gen = torch.Generator().manual_seed(seed)
    prompt_ids, unknown = encode_prompt(prompt or "", words)
    context = prompt_ids if words.start is None else [words.start, *prompt_ids]  # a corpus prompt starts a sentence
    if not context:  # a synthetic sequence starts with any symbol
        allowed = [i for i in range(len(words.words)) if i not in words.banned]
        context = [allowed[int(torch.randint(len(allowed), (1,), generator=gen))]]
    ids = sample(model, context, n_words, temperature, gen, words.banned)
    out = [words.words[i] for i in ids]
    return {"checkpoint": str(run.checkpoint), "seed": seed, "temperature": temperature,
            "context": [words.words[i] for i in context], "unknown_prompt_words": unknown,
            "words": out, "text": as_text([words.words[i] for i in prompt_ids] + out)}


__all__ = ["LMWords", "as_text", "encode_prompt", "generate", "next_logits", "run_words", "sample"]
