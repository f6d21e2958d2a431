"""Suite-wide test setup.

The suite runs as a newcomer would run it: no corpora on disk and no network. So

* the Hugging Face hub is switched off (``HF_HUB_OFFLINE``, ``HF_DATASETS_OFFLINE``): no test may
  download anything;
* tests that need corpus-shaped data train on :func:`tiny_data_dir`, small files with the real
  names and formats (PTB, WikiText-2, Multi30k), read with ``data.verify: false`` since their
  counts and digests are not the published ones (the :func:`tiny_data` keys);
* only the checks of the real corpora (counts, digests, full loads) read ``REVRNN_DATA_DIR``, and
  they skip, saying why, when it is not set (``tests/data/conftest.py``).

The tokenisation cache of the translation data goes to a temporary directory (never the user's
home), and torch is pinned to one thread so timings are stable on shared CI machines.
"""

import os
import random
import tempfile
from pathlib import Path

import pytest
import torch

os.environ["HF_HUB_OFFLINE"] = "1"
os.environ["HF_DATASETS_OFFLINE"] = "1"
# deterministic_settings() keeps NaN-filling torch.empty here (training turns it off for speed), so
# an operator that reads memory it never wrote gives NaN and fails the exactness tests
os.environ["REVRNN_FILL_UNINITIALIZED"] = "1"

if not os.environ.get("REVRNN_CACHE_DIR"):
    os.environ["REVRNN_CACHE_DIR"] = tempfile.mkdtemp(prefix="revrnn-test-cache-")

torch.set_num_threads(1)


@pytest.fixture(autouse=True)
def _restore_global_torch_settings():
    """verify() and the runner switch on deterministic algorithms process-wide (as a CLI process
    should); leave the test session as it was found."""
    flag = torch.are_deterministic_algorithms_enabled()
    warn = torch.is_deterministic_algorithms_warn_only_enabled()
    fill = torch.utils.deterministic.fill_uninitialized_memory
    yield
    torch.use_deterministic_algorithms(flag, warn_only=warn)
    torch.utils.deterministic.fill_uninitialized_memory = fill


# ---- tiny corpora in the real formats -------------------------------------------------------------

#: Lines per split of the tiny corpora (the real ones: PTB 42,068 / 3,370 / 3,761, Multi30k 29,000 / 1,014 / 1,000).
TINY_LINES = {"train": 600, "valid": 80, "test": 80}
TINY_PAIRS = {"train": 240, "valid": 60, "test": 40}

_SYLLABLES = ["ka", "lo", "mi", "ren", "su", "ta", "vo", "ber", "dan", "el", "fi", "gor", "hu", "is", "ju"]

# parallel phrase pieces: (English, German); sentences are built from them so that both sides align
_SUBJECTS = [("A man", "Ein Mann"), ("A woman", "Eine Frau"), ("Two dogs", "Zwei Hunde"), ("A young boy", "Ein junger Junge"),
             ("The girl", "Das Mädchen"), ("Three people", "Drei Leute"), ("A black dog", "Ein schwarzer Hund"),
             ("An old man", "Ein alter Mann"), ("A group of children", "Eine Gruppe Kinder")]
_VERBS = [("is running", "läuft"), ("is sitting", "sitzt"), ("is playing", "spielt"), ("is standing", "steht"),
          ("is jumping", "springt"), ("is walking", "geht"), ("is looking", "schaut")]
_PLACES = [("on the grass", "auf dem Gras"), ("in front of a white fence", "vor einem weißen Zaun"),
           ("near the water", "am Wasser"), ("on a red-brick street", "auf einer Backstein-Straße"),
           ("in the snow", "im Schnee"), ("at the beach", "am Strand"), ("inside a small café", "in einem kleinen Café"),
           ("under a blue sky", "unter einem blauen Himmel")]
_EXTRAS = [("", ""), (" with a ball", " mit einem Ball"), (" while it rains", " während es regnet"),
           (" , smiling", " , lächelnd"), (" & laughing", " & lacht")]
# only in valid and test, as rare words are in the real corpus: they encode to <unk>
_UNSEEN = [(" with a green kite", " mit einem grünen Drachen"), (" beside a lighthouse", " neben einem Leuchtturm")]


def _lm_lines(rng: random.Random, words: list[str], n: int, wiki: bool) -> list[str]:
    """``n`` lines in the corpus' layout: PTB `` w w w `` lines; WikiText-2 headings, blanks and text."""
    weights = [1.0 / (i + 1) for i in range(len(words))]  # Zipf-like, as text is
    lines = []
    while len(lines) < n:
        text = " ".join(rng.choices(words, weights, k=rng.randint(4, 18)))
        if wiki and rng.random() < 0.1:
            lines += [" ", f" = {rng.choice(words)} = ", " "]
        lines.append(f" {text} ")  # the classic files' canonical form (data/download.py: lm_rows_to_text)
    return lines[:n]


def write_tiny_corpora(root: Path, seed: int = 0) -> Path:
    """Write PTB, WikiText-2 and Multi30k look-alikes under ``root`` (the loaders' layout); returns ``root``.

    Valid and test use only words of the training split, as the real language-model corpora do
    (rare words are ``<unk>``); the Multi30k sides are parallel, raw, capitalised and punctuated,
    so Moses tokenisation, lowercasing and hyphen splitting all have work to do.
    """
    rng = random.Random(seed)
    words = sorted({rng.choice(_SYLLABLES) + rng.choice(_SYLLABLES) for _ in range(400)})[:150] + ["<unk>", "N", "the"]
    for subdir, names, wiki in (("ptb", ("ptb.train.txt", "ptb.valid.txt", "ptb.test.txt"), False),
                                ("wikitext-2", ("wiki.train.tokens", "wiki.valid.tokens", "wiki.test.tokens"), True)):
        (root / subdir).mkdir(parents=True, exist_ok=True)
        train = [f" {' '.join(words)} "] + _lm_lines(rng, words, TINY_LINES["train"] - 1, wiki)
        splits = {"train": train, "valid": _lm_lines(rng, words, TINY_LINES["valid"], wiki),
                  "test": _lm_lines(rng, words, TINY_LINES["test"], wiki)}
        for split, name in zip(("train", "valid", "test"), names):
            (root / subdir / name).write_text("\n".join(splits[split]) + "\n", encoding="utf-8")
    (root / "multi30k").mkdir(parents=True, exist_ok=True)
    for split, stem in (("train", "train"), ("valid", "val"), ("test", "test2016")):
        pairs = []
        extras = _EXTRAS if split == "train" else _EXTRAS + _UNSEEN
        for _ in range(TINY_PAIRS[split]):
            parts = [rng.choice(options) for options in (_SUBJECTS, _VERBS, _PLACES, extras)]
            pairs.append((" ".join(p[0] for p in parts[:3]) + parts[3][0] + ".",
                          " ".join(p[1] for p in (parts[0], parts[1], parts[2])) + parts[3][1] + "."))
        for i, lang in enumerate(("en", "de")):
            text = "".join(p[i].replace(" ,", ",") + "\n" for p in pairs)
            (root / "multi30k" / f"{stem}.{lang}").write_text(text, encoding="utf-8")
    return root


@pytest.fixture(scope="session")
def tiny_data_dir(tmp_path_factory) -> Path:
    """A data directory with tiny PTB, WikiText-2 and Multi30k files (read them with ``verify: false``)."""
    return write_tiny_corpora(tmp_path_factory.mktemp("tiny-corpora"))


@pytest.fixture(scope="session")
def tiny_data(tiny_data_dir) -> dict:
    """The ``data:`` keys that point a spec at :func:`tiny_data_dir`: ``{**spec["data"], **tiny_data}``."""
    return {"data_dir": str(tiny_data_dir), "verify": False, "download": False}
