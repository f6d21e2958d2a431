"""Subprocess used by :func:`revrnn_cli.memory.measure.peak_step_bytes`: build, optionally step, report.

    python -m revrnn_cli.memory.probe '{"config": {...}, "mode": "reverse", "steps": 70, "batch": 20,
                                        "device": "cpu", "step": true}'

Prints one JSON line: the process's peak resident set (CPU) or the allocator's peak during the step
(CUDA). A fresh process per measurement, because a process's peak RSS can never go back down.
"""

from __future__ import annotations

import json
import resource
import sys

import torch


def peak_rss_bytes() -> int:
    """This process's peak resident set.

    On Linux, VmHWM from /proc/self/status: ``getrusage``'s ru_maxrss survives ``exec``, so a probe
    started from a large parent would report the parent's peak instead of its own.
    """
    try:
        with open("/proc/self/status") as f:
            for line in f:
                if line.startswith("VmHWM:"):
                    return int(line.split()[1]) * 1024
    except OSError:
        pass
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024  # KiB on Linux, bytes on macOS


def main(argv: list[str]) -> None:
    args = json.loads(argv[0])
    torch.set_num_threads(1)
    from ..spec import spec_class

    spec = spec_class(args["config"], "probe").model_validate(args["config"])
    device = torch.device(args["device"])
    torch.manual_seed(spec.seed)
    if spec.task == "translation":
        from . import profile_nmt as prof

        model = prof.build_model(args["mode"], spec, device)
        batch = prof.make_batch(spec, args["steps"], args["batch"], spec.seed, device)

        def step():
            prof.training_step(model, batch)
    else:
        from .profile import build_model, make_batch, training_step, vocab_size

        vocab = vocab_size(spec)
        model = build_model(args["mode"], spec, vocab, device)
        tokens, targets = make_batch(vocab, args["steps"], args["batch"], spec.seed, device)

        def step():
            training_step(args["mode"], model, tokens, targets)
    out = {}
    if device.type == "cuda":
        torch.cuda.synchronize()
        torch.cuda.reset_peak_memory_stats(device)
        before = torch.cuda.memory_allocated(device)
        if args["step"]:
            step()
            torch.cuda.synchronize()
        out["peak_step_bytes"] = torch.cuda.max_memory_allocated(device) - before
    else:
        if args["step"]:
            step()
        out["peak_rss_bytes"] = peak_rss_bytes()
    print(json.dumps(out))


if __name__ == "__main__":
    main(sys.argv[1:])
