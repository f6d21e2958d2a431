"""Language modelling as a task for the shared training loop (reference `language_modelling/train.py`).

Two kinds of data:

* a token stream (PTB, WikiText-2): batchified column-wise, cut into segments of randomised
  length (AWD-LSTM: N(bptt, 5) with probability 0.95, else N(bptt/2, 5), at least 5 tokens; the
  learning rate is scaled by length / bptt), the hidden state carried from segment to segment in
  every backprop mode and reset at the start of each epoch;
* independent sequences (the synthetic ``repeat`` / ``remember`` tasks): the state starts from zero
  for every batch and accuracy is reported alongside perplexity.

Under torchrun each rank trains on its contiguous part of every global batch (the reference
implementation of the task contract in :mod:`revrnn_cli.training.distributed`): the columns
``shard(batch_size)`` of each stream (each column is a contiguous piece of the corpus with its own
carried state, so a rank carries the states of its columns), or its part of each batch of
sequences. Segment lengths and batch order come from generators seeded identically on every rank.
Evaluation is sharded the same way and its sums are added over the ranks.
"""

from __future__ import annotations

import math
import random

import torch

from ..data import (
    DataError,
    batchify,
    get_batch,
    load_lm_corpus,
    make_synthetic_splits,
    num_input_tokens,
    sample_bptt_length,
)
from ..engine.layers import RevState
from ..errors import UserError
from ..models.lm import RNNLanguageModel
from ..training import distributed
from ..training.loop import StepOutput


class LMTask:
    def __init__(self, spec, device: torch.device):
        self.spec, self.device = spec, device
        self.dist = dist = distributed.context()
        data, train = spec.data, spec.train
        if train.batch_size % dist.world_size:
            raise UserError(f"train.batch_size {train.batch_size} must be divisible by the number of processes "
                            f"({dist.world_size}): each trains on an equal part of every batch")
        self.synthetic = data.synthetic
        self.reports_accuracy = self.synthetic
        if self.synthetic:
            splits = make_synthetic_splits(data.dataset, data.vocab_size, data.seq_len, data.n_train, data.n_valid,
                                           data.n_test, spec.seed)
            self.splits = {k: (x.t().contiguous().to(device), y.t().contiguous().to(device))
                           for k, (x, y) in (("train", splits.train), ("valid", splits.valid), ("test", splits.test))}
            last = data.n_train % train.batch_size
            if 0 < last < dist.world_size:
                raise UserError(f"data.n_train {data.n_train} leaves a last batch of {last} sequence(s) for "
                                f"{dist.world_size} processes: change data.n_train or train.batch_size")
            vocab = num_input_tokens(data.vocab_size)
        else:
            corpus = load_lm_corpus(data.dataset, data.data_dir, download=data.download, verify=data.verify)
            self.streams = {"train": self._columns(batchify(corpus.train, train.batch_size)),
                            "valid": self._columns(batchify(corpus.valid, train.eval_batch_size)),
                            "test": self._columns(batchify(corpus.test, train.test_batch_size))}
            for name, s in self.streams.items():
                if s.shape[0] < 2:
                    raise DataError(f"{data.dataset} {name} split is too short for its batch size")
            vocab = len(corpus.vocab)
        self.vocab_size = vocab
        self.model = RNNLanguageModel(spec.model, vocab, spec.backprop).to(device)
        self.net = dist.data_parallel(self.model)  # the training forward goes through DDP (if distributed)
        self.bptt_rng = random.Random(spec.seed)
        self.hidden = None

    # ---- the data -------------------------------------------------------------------------------
    def _columns(self, stream: torch.Tensor) -> torch.Tensor:
        """This rank's columns of a batchified stream (all of them in one process), on the device."""
        if self.dist.distributed:
            stream = stream[:, self.dist.shard(stream.shape[1])].contiguous()
        return stream.to(self.device)

    def epoch_size(self) -> int | None:
        if self.synthetic:
            return math.ceil(self.splits["train"][0].shape[1] / self.spec.train.batch_size)
        return None  # random segment lengths: known only by walking the stream

    def batches(self, epoch: int, start: int):
        if self.synthetic:
            yield from self._sequence_batches(epoch, start)
        else:
            yield from self._stream_batches(epoch, start)

    def _sequence_batches(self, epoch, start):
        x, y = self.splits["train"]
        bs = self.spec.train.batch_size
        gen = torch.Generator().manual_seed(self.spec.seed * 1000003 + epoch)
        order = torch.randperm(x.shape[1], generator=gen).to(x.device)
        n = math.ceil(x.shape[1] / bs)
        for i in range(start, n):
            idx = order[i * bs : (i + 1) * bs]
            if self.dist.distributed:
                idx = idx[self.dist.shard(len(idx))]
            yield i, (x[:, idx], y[:, idx], 1.0)

    def _stream_batches(self, epoch, start):
        """Segments of the training stream; ``start`` counts segments already done this epoch.

        The segment boundaries depend only on the BPTT generator, whose state is checkpointed
        together with the token offset, so a resumed epoch continues exactly where it stopped.
        """
        tr = self.spec.train
        source = self.streams["train"]
        if start == 0:
            self.offset = 0
            self.hidden = None
        i = start
        while self.offset < source.shape[0] - 2:
            seq_len = sample_bptt_length(self.bptt_rng, tr.bptt) if tr.random_bptt else tr.bptt
            inp, tgt = get_batch(source, self.offset, seq_len)
            self.offset += seq_len
            yield i, (inp, tgt, inp.shape[0] / tr.bptt)
            i += 1

    # ---- one step -------------------------------------------------------------------------------
    def train_step(self, batch) -> StepOutput:
        inp, tgt, scale = batch
        # reverse mode computes the loss once, in the backward pass; the loop reads it after backward
        res = self.net.segment(inp, tgt, None if self.synthetic else self.hidden, defer_loss=True)
        if not self.synthetic:
            self.hidden = self.model.detach_state(res.state)
        return StepOutput(res.loss_sum, res.tokens, scale if self.spec.train.random_bptt else 1.0,
                          res.correct, res.bits, deferred=res.deferred)

    @torch.no_grad()
    def evaluate(self, split: str, max_batches: int | None = None) -> dict:
        self.model.eval()
        total, tokens, correct, batches = 0.0, 0, 0, 0
        if self.synthetic:
            x, y = self.splits[split]
            bs = self.spec.train.eval_batch_size
            for i in range(0, x.shape[1], bs):
                part = slice(i, min(i + bs, x.shape[1]))
                if self.dist.distributed:  # this rank's sequences of the batch (possibly none)
                    part = range(part.start, part.stop)[self.dist.shard(part.stop - part.start)]
                    part = slice(part.start, part.stop)
                if part.stop > part.start:
                    res = self.model.segment(x[:, part], y[:, part])
                    total, tokens, correct = total + float(res.loss_sum), tokens + res.tokens, correct + res.correct
                batches += 1
                if max_batches and batches >= max_batches:
                    break
        else:
            source, hidden = self.streams[split], None
            # a rank with no columns (a batch smaller than the world) contributes nothing
            for off in range(0, source.shape[0] - 1 if source.shape[1] else 0, self.spec.train.bptt):
                inp, tgt = get_batch(source, off, self.spec.train.bptt)
                res = self.model.segment(inp, tgt, hidden)
                hidden = res.state
                total, tokens, correct = total + float(res.loss_sum), tokens + res.tokens, correct + res.correct
                batches += 1
                if max_batches and batches >= max_batches:
                    break
        if self.dist.distributed:
            total, tokens, correct = self.dist.all_reduce_sum([total, tokens, correct])
            tokens, correct = int(tokens), int(correct)
        loss = total / max(tokens, 1)
        out = {"split": split, "loss": loss, "ppl": math.exp(loss) if loss < 50 else math.inf, "tokens": tokens}
        if self.reports_accuracy:
            out["accuracy"] = correct / max(tokens, 1)
        return out

    # ---- what a checkpoint needs beyond the model ------------------------------------------------
    def memory_stats(self) -> dict:
        """The paper's accounting of the last segment (empty for the ordinary baselines)."""
        return dict(getattr(self.model.rnn, "last_stats", {}))

    def state_dict(self) -> dict:
        hidden = None
        if isinstance(self.hidden, RevState):
            hidden = {"rev": list(self.hidden.ints)}
        elif self.hidden is not None:
            hidden = {"base": [list(s) if isinstance(s, tuple) else [s] for s in self.hidden]}
        return {"offset": getattr(self, "offset", 0), "bptt_rng": _rng_to_plain(self.bptt_rng.getstate()),
                "hidden": hidden}

    def load_state_dict(self, state: dict) -> None:
        self.offset = state["offset"]
        self.bptt_rng.setstate(_rng_from_plain(state["bptt_rng"]))
        h = state["hidden"]
        if h is None:
            self.hidden = None
        elif "rev" in h:
            self.hidden = RevState([t.to(self.device) for t in h["rev"]])
        else:
            self.hidden = [tuple(t.to(self.device) for t in s) if len(s) == 2 else s[0].to(self.device) for s in h["base"]]


def _rng_to_plain(state):
    version, internal, gauss = state
    return [version, list(internal), gauss]


def _rng_from_plain(plain):
    version, internal, gauss = plain
    return (version, tuple(internal), gauss)
