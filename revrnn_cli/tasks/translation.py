"""Translation as a task for the shared training loop (reference `nmt/train_scripts/*.sh`, `nmt/opts.py`).

Batches are length-bucketed sentence pairs, reshuffled every epoch from a generator seeded by the
spec's seed and the epoch (so a resumed epoch replays the same batches and skips those done). The
loss is the summed token cross-entropy divided by the number of *sentences*, as in the reference
(OpenNMT), which is what its learning rates (0.2-1.0) and clipping norm (5) are calibrated for;
perplexity is reported per target token. Validation is teacher-forced perplexity (the model
selection criterion); BLEU comes from :mod:`.decode`, in ``revrnn evaluate``.

Under torchrun (:mod:`~revrnn_cli.training.distributed`, whose task contract this follows) every
rank walks the same batches and trains on its contiguous part of each batch's sentences; a batch
with fewer sentences than processes (at most the last of an epoch's pools) is skipped by every
rank. Validation shards the batches the same way and adds the sums over the ranks.
"""

from __future__ import annotations

import math

import torch

from ..data.translation import batch_indices, collate, load_parallel_corpus
from ..models.nmt import Seq2Seq
from ..training import distributed
from ..training.loop import StepOutput


class TranslationTask:
    reports_accuracy = False

    def __init__(self, spec, device: torch.device):
        self.spec, self.device = spec, device
        self.corpus = load_parallel_corpus(spec.data)
        self.model = Seq2Seq(spec.model, len(self.corpus.src_vocab), len(self.corpus.tgt_vocab), spec.backprop).to(device)
        self.dist = distributed.context()
        self.net = self.dist.data_parallel(self.model)  # the training forward goes through DDP (if distributed)
        self._epoch_batches: tuple[int, list] | None = None

    # ---- the data -------------------------------------------------------------------------------
    def _batches_of(self, epoch: int) -> list[list[int]]:
        if self._epoch_batches is None or self._epoch_batches[0] != epoch:
            gen = torch.Generator().manual_seed(self.spec.seed * 1000003 + epoch)
            self._epoch_batches = (epoch, batch_indices(self.corpus.splits["train"], self.spec.train.batch_size,
                                                        shuffle=True, generator=gen))
        return self._epoch_batches[1]

    def epoch_size(self) -> int:
        return len(self._batches_of(0))

    def batches(self, epoch: int, start: int):
        split = self.corpus.splits["train"]
        order = self._batches_of(epoch)
        for i in range(start, len(order)):
            idx = self._part(order[i])
            if idx is not None:
                yield i, collate(split, idx).to(self.device)

    def _part(self, idx: list[int]) -> list[int] | None:
        """This rank's sentences of a batch (all of them in a single process); None: skip it."""
        d = self.dist
        if not d.distributed:
            return idx
        return idx[d.shard(len(idx))] if len(idx) >= d.world_size else None

    # ---- one step -------------------------------------------------------------------------------
    def train_step(self, batch) -> StepOutput:
        res = self.net.loss(batch)
        return StepOutput(res.loss_sum, res.tokens, 1.0, res.correct, res.bits, normalizer=batch.size)

    @torch.no_grad()
    def evaluate(self, split: str, max_batches: int | None = None) -> dict:
        """Teacher-forced loss per target token and perplexity (the reference's validation ppl)."""
        self.model.eval()
        data = self.corpus.splits[split]
        total, tokens, correct = 0.0, 0, 0
        bits: dict[str, float] = {}
        for i, idx in enumerate(batch_indices(data, self.spec.train.eval_batch_size, shuffle=False)):
            if max_batches and i >= max_batches:
                break
            idx = idx[self.dist.shard(len(idx))] if self.dist.distributed else idx
            if not idx:
                continue
            res = self.model.loss(collate(data, idx).to(self.device))
            total, tokens, correct = total + float(res.loss_sum), tokens + res.tokens, correct + res.correct
            for k, v in res.bits.items():
                if k.endswith("_bits"):
                    bits[k] = bits.get(k, 0.0) + v
        self._eval_bits = bits
        if self.dist.distributed:
            total, tokens, correct = self.dist.all_reduce_sum([total, tokens, correct])
            tokens, correct = int(tokens), int(correct)
        loss = total / max(tokens, 1)
        return {"split": split, "loss": loss, "ppl": math.exp(loss) if loss < 50 else math.inf, "tokens": tokens,
                "accuracy": correct / max(tokens, 1)}

    def memory_stats(self) -> dict:
        """The paper's accounting (encoder and decoder separately) summed over the last evaluation's
        batches (this rank's), or of the last batch when nothing was evaluated yet."""
        return dict(getattr(self, "_eval_bits", None) or self.model.last_bits)

    # ---- what a checkpoint needs beyond the model (the batch order is a function of the epoch) ---
    def state_dict(self) -> dict:
        return {}

    def load_state_dict(self, state: dict) -> None:
        pass


__all__ = ["TranslationTask"]
