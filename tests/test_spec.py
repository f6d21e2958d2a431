"""Experiment specs: unknown keys, wrong types, impossible combinations, ``--set`` overrides,
``--print-config`` round trips and YAML syntax errors (all exit 2, one line, naming the key)."""

from __future__ import annotations

import json

import pytest
import yaml

from revrnn_cli import cli
from revrnn_cli.data.config import DataConfig
from revrnn_cli.errors import EXIT_OK, EXIT_USAGE, SpecError
from revrnn_cli.models.lm import LMConfig
from revrnn_cli.spec import ExperimentSpec, OutputConfig, apply_overrides, load_spec
from revrnn_cli.spec import TrainConfig

BASE = {
    "name": "tiny",
    "seed": 3,
    "data": {"dataset": "repeat", "vocab_size": 5, "seq_len": 12, "n_train": 64, "n_valid": 16, "n_test": 16},
    "model": {"cell": "revgru", "emb_size": 8, "hidden_size": 8, "layers": 1},
    "train": {"batch_size": 8, "eval_batch_size": 16, "random_bptt": False, "epochs": 1, "log_interval": 1},
}


def write(tmp_path, spec, name="spec.yaml"):
    path = tmp_path / name
    path.write_text(spec if isinstance(spec, str) else yaml.safe_dump(spec, sort_keys=False))
    return path


def merged(**sections):
    out = json.loads(json.dumps(BASE))
    for section, values in sections.items():
        if isinstance(values, dict):
            out.setdefault(section, {}).update(values)
        else:
            out[section] = values
    return out


def spec_error(path, overrides=()) -> str:
    with pytest.raises(SpecError) as e:
        load_spec(path, list(overrides))
    assert e.value.exit_code == EXIT_USAGE
    msg = str(e.value)
    assert "\n" not in msg
    return msg


def run_main(argv, capsys):
    with pytest.raises(SystemExit) as e:
        cli.main([str(a) for a in argv])
    out, err = capsys.readouterr()
    return e.value.code, out, err


def test_base_spec_is_valid(tmp_path):
    spec, config = load_spec(write(tmp_path, BASE))
    assert spec.model.cell == "revgru" and spec.data.vocab_size == 5
    assert config["model"]["emb_size"] == 8


# ---- unknown keys -------------------------------------------------------------------------------

@pytest.mark.parametrize("section, key, model", [
    (None, "nmae", ExperimentSpec),
    ("model", "hiden_size", LMConfig),
    ("train", "lrr", TrainConfig),
    ("data", "datset", DataConfig),
    ("output", "dir", OutputConfig),
])
def test_unknown_key_names_file_key_and_allowed_keys(tmp_path, section, key, model):
    raw = merged()
    if section is None:
        raw[key] = 1
    else:
        raw.setdefault(section, {})[key] = 1
    path = write(tmp_path, raw)
    msg = spec_error(path)
    dotted = key if section is None else f"{section}.{key}"
    assert str(path) in msg
    assert f"{dotted}: unknown key" in msg
    allowed = msg.split("allowed:", 1)[1]
    for field in model.model_fields:
        assert field in allowed


def test_unknown_key_via_cli_is_one_line_exit_2(tmp_path, capsys):
    path = write(tmp_path, merged(model={"hiden_size": 8}))
    code, out, err = run_main(["train", path, "--print-config"], capsys)
    assert code == EXIT_USAGE
    assert out == ""
    lines = [line for line in err.splitlines() if line.strip()]
    assert len(lines) == 1
    assert str(path) in lines[0] and "model.hiden_size" in lines[0] and "hidden_size" in lines[0]


# ---- wrong types ----------------------------------------------------------------------------------

@pytest.mark.parametrize("section, key, value", [
    ("train", "lr", "fast"),
    ("model", "layers", "two"),
    ("train", "epochs", 1.5),
    ("model", "dropout", [0.1]),
    ("data", "download", "maybe"),
    (None, "seed", "abc"),
])
def test_wrong_type_names_key(tmp_path, section, key, value):
    raw = merged()
    (raw if section is None else raw[section] if section in raw else raw.setdefault(section, {}))[key] = value
    path = write(tmp_path, raw)
    msg = spec_error(path)
    dotted = key if section is None else f"{section}.{key}"
    assert str(path) in msg
    assert f"{dotted}:" in msg


def test_wrong_type_via_cli_exit_2(tmp_path, capsys):
    path = write(tmp_path, merged(train={"lr": "fast"}))
    code, out, err = run_main(["train", path], capsys)
    assert code == EXIT_USAGE
    assert out == ""
    assert "train.lr" in err and "Traceback" not in err


def test_out_of_range_value_names_key(tmp_path):
    assert "model.dropout" in spec_error(write(tmp_path, merged(model={"dropout": 1.0})))
    assert "train.lr" in spec_error(write(tmp_path, merged(train={"lr": 0})))


# ---- impossible combinations --------------------------------------------------------------------

SYNTHETIC_ONLY_FREE = {"dataset": "ptb"}  # a ptb data section without the synthetic keys


@pytest.mark.parametrize("sections, needle", [
    (dict(model={"cell": "lstm"}, train={"backprop": "store"}), "train.backprop"),
    (dict(model={"cell": "gru"}, train={"backprop": "reverse"}), "train.backprop"),
    (dict(model={"cell": "gru", "forget": False}), "forget"),
    (dict(model={"cell": "lstm", "max_forget_bits": 2}), "max_forget_bits"),
    (dict(model={"cell": "revlstm", "emb_size": 9}), "emb_size"),
    (dict(model={"cell": "revgru", "hidden_size": 7}), "hidden_size"),
    (dict(model={"max_forget_bits": 4}), "max_forget_bits"),
    (dict(model={"max_forget_bits": 0}), "max_forget_bits"),
    (dict(data={**SYNTHETIC_ONLY_FREE, "vocab_size": 7}), "vocab_size"),
    (dict(data={**SYNTHETIC_ONLY_FREE, "seq_len": 30}), "seq_len"),
    (dict(device="tpu"), "device"),
])
def test_impossible_combinations_exit_2(tmp_path, sections, needle):
    raw = merged()
    if "data" in sections:  # replace, not update: a ptb section must not carry the synthetic keys
        raw["data"] = sections.pop("data")
    for section, values in sections.items():
        if isinstance(values, dict):
            raw.setdefault(section, {}).update(values)
        else:
            raw[section] = values
    path = write(tmp_path, raw)
    msg = spec_error(path)
    assert str(path) in msg
    assert needle in msg


def test_impossible_combination_from_override_exit_2(tmp_path, capsys):
    path = write(tmp_path, merged())
    code, out, err = run_main(["train", path, "--set", "model.cell=lstm", "--set", "train.backprop=store",
                               "--print-config"], capsys)
    assert code == EXIT_USAGE and out == ""
    assert "train.backprop" in err


def test_reversible_cells_accept_the_same_spec(tmp_path):
    # control for the combination tests: each impossible setting alone is fine where it applies
    load_spec(write(tmp_path, merged(model={"cell": "revlstm", "forget": False, "max_forget_bits": 2},
                                     train={"backprop": "store"})))
    load_spec(write(tmp_path, merged(model={"cell": "revgru", "max_forget_bits": None})))
    load_spec(write(tmp_path, merged(data={"dataset": "remember", "vocab_size": 7})))
    ptb = merged()
    ptb["data"] = dict(SYNTHETIC_ONLY_FREE)
    load_spec(write(tmp_path, ptb))


# ---- --set overrides ----------------------------------------------------------------------------

def test_set_parses_yaml_scalars():
    raw = {"train": {"lr": 1.0}}
    out = apply_overrides(raw, ["train.epochs=3", "train.lr=0.5", "train.random_bptt=false", "train.clip=2",
                                "train.max_steps=null", "name=a=b", "model.max_forget_bits=~", "seed=-7",
                                "output.name=", "train.schedule= none"])
    assert raw == {"train": {"lr": 1.0}}  # the input is not modified
    t = out["train"]
    assert t["epochs"] == 3 and type(t["epochs"]) is int
    assert t["lr"] == 0.5 and type(t["lr"]) is float
    assert t["random_bptt"] is False
    assert t["clip"] == 2 and type(t["clip"]) is int
    assert t["max_steps"] is None
    assert t["schedule"] == "none"
    assert out["name"] == "a=b"
    assert out["model"]["max_forget_bits"] is None
    assert out["seed"] == -7
    assert out["output"]["name"] is None


def test_set_values_validate_to_typed_spec(tmp_path):
    path = write(tmp_path, merged())
    spec, config = load_spec(path, ["train.epochs=3", "train.lr=1e-3", "train.random_bptt=true",
                                    "model.max_forget_bits=none", "train.max_steps=5", "train.max_steps=null",
                                    "model.forget=false", "model.layers=2", "train.momentum=0.5"])
    assert spec.train.epochs == 3 and isinstance(spec.train.epochs, int)
    assert spec.train.lr == 1e-3 and isinstance(spec.train.lr, float)
    assert spec.train.random_bptt is True
    assert spec.model.max_forget_bits is None
    assert spec.train.max_steps is None  # the last assignment wins
    assert spec.model.forget is False
    assert spec.model.layers == 2
    assert config["train"]["momentum"] == 0.5


@pytest.mark.parametrize("override, needle", [
    ("model.foo.bar=1", "model.foo"),
    ("newsection.x=1", "newsection"),
    ("model.hiden_size=8", "model.hiden_size"),
    ("train.lr", "KEY=VALUE"),
    ("=3", "empty key"),
    ("model.cell.x=1", "cell"),
    ("train.epochs=many", "train.epochs"),
])
def test_bad_overrides_exit_2(tmp_path, capsys, override, needle):
    path = write(tmp_path, merged())
    msg = spec_error(path, [override])
    assert needle in msg
    code, out, err = run_main(["train", path, "--set", override, "--print-config"], capsys)
    assert code == EXIT_USAGE and out == ""
    assert needle in err


def test_unknown_nested_override_lists_allowed_keys(tmp_path):
    msg = spec_error(write(tmp_path, merged()), ["model.foo.bar=1"])
    assert "unknown key" in msg
    assert "hidden_size" in msg.split("allowed:", 1)[1]


# ---- --print-config -----------------------------------------------------------------------------

def test_print_config_round_trips(tmp_path, capsys):
    path = write(tmp_path, merged())
    overrides = ["model.cell=revlstm", "model.max_forget_bits=none", "train.lr=0.25", "train.max_steps=7",
                 "output.name=x"]
    argv = ["train", path]
    for o in overrides:
        argv += ["--set", o]
    code, out, err = run_main([*argv, "--print-config"], capsys)
    assert code == EXIT_OK, err
    _, expected = load_spec(path, overrides)
    printed = write(tmp_path, out, "printed.yaml")
    spec2, config2 = load_spec(printed)
    assert config2 == expected
    assert spec2.model.max_forget_bits is None and spec2.train.max_steps == 7
    # and printing the printed config gives the same text again
    code, out2, _ = run_main(["train", printed, "--print-config"], capsys)
    assert code == EXIT_OK and out2 == out


@pytest.mark.parametrize("data", [None, {"dataset": "ptb"}])
def test_print_config_round_trips_defaults(tmp_path, capsys, data):
    raw = {"name": "d"} if data is None else {"name": "d", "data": data}
    path = write(tmp_path, raw)
    code, out, _ = run_main(["train", path, "--print-config"], capsys)
    assert code == EXIT_OK
    assert load_spec(write(tmp_path, out, "printed.yaml"))[1] == load_spec(path)[1]


def test_print_config_json_is_one_object(tmp_path, capsys):
    path = write(tmp_path, merged())
    code, out, err = run_main(["train", path, "--set", "train.epochs=4", "--print-config", "--json"], capsys)
    assert code == EXIT_OK, err
    lines = [line for line in out.splitlines() if line.strip()]
    assert len(lines) == 1
    obj = json.loads(lines[0])
    assert obj == load_spec(path, ["train.epochs=4"])[1]
    assert obj["train"]["epochs"] == 4


# ---- YAML syntax and shape ----------------------------------------------------------------------

def test_invalid_yaml_names_file_and_line(tmp_path, capsys):
    text = "name: t\nmodel:\n  cell: revgru\n  emb_size: [8\n  hidden_size: 8\n"
    path = write(tmp_path, text)
    with pytest.raises(SpecError) as e:
        load_spec(path)
    msg = str(e.value)
    assert msg.startswith(f"{path}:")
    line = int(msg[len(str(path)) + 1:].split(":", 1)[0])
    assert line in (4, 5)  # the unclosed list starts on line 4; the parser notices on line 5
    assert "invalid YAML" in msg
    code, out, err = run_main(["train", path], capsys)
    assert code == EXIT_USAGE and out == ""
    lines = [x for x in err.splitlines() if x.strip()]
    assert len(lines) == 1 and f"{path}:{line}" in lines[0]


def test_tab_indented_yaml_names_line(tmp_path):
    path = write(tmp_path, "name: t\nmodel:\n\tcell: revgru\n")
    with pytest.raises(SpecError) as e:
        load_spec(path)
    assert str(e.value).startswith(f"{path}:3:")


def test_non_mapping_spec_exit_2(tmp_path, capsys):
    path = write(tmp_path, "- a\n- b\n")
    assert "mapping" in spec_error(path)
    code, _, err = run_main(["train", path], capsys)
    assert code == EXIT_USAGE and "mapping" in err


def test_missing_spec_file_exit_2(tmp_path, capsys):
    code, out, err = run_main(["train", tmp_path / "nope.yaml", "--print-config"], capsys)
    assert code == EXIT_USAGE and out == ""
    assert "nope.yaml" in err


@pytest.mark.parametrize("text", ["", "\n\n", "# only a comment\n"])
def test_empty_spec_is_an_error_not_the_default_experiment(tmp_path, text):
    path = write(tmp_path, text)
    with pytest.raises(SpecError) as e:
        load_spec(path)
    assert str(path) in str(e.value) and "empty" in str(e.value)
    _, config = load_spec(write(tmp_path, "{}\n"))  # an explicit empty mapping still means the defaults
    assert config == ExperimentSpec().model_dump(mode="json")


def test_duplicate_keys_are_refused_naming_key_and_lines(tmp_path):
    path = write(tmp_path, "name: a\ntrain:\n  lr: 20\n  epochs: 2\n  lr: 2\n")
    with pytest.raises(SpecError) as e:
        load_spec(path)
    assert f"{path}:5:" in str(e.value) and "duplicate key 'lr'" in str(e.value) and "line 3" in str(e.value)
    with pytest.raises(SpecError, match="duplicate key 'a'"):
        apply_overrides({}, ["model={a: 1, a: 2}"])
    assert load_spec(write(tmp_path, "name: a\ntrain: {lr: 2}\nmodel: {layers: 2}\n"))[0].train.lr == 2  # same key, other maps


def test_a_spec_that_is_not_utf8_is_one_line(tmp_path):
    path = tmp_path / "latin1.yaml"
    path.write_bytes("name: caf\u00e9\n".encode("latin-1"))
    with pytest.raises(SpecError) as e:
        load_spec(path)
    assert str(path) in str(e.value) and "UTF-8" in str(e.value) and "\n" not in str(e.value)
    with pytest.raises(SpecError, match="is a directory"):
        load_spec(tmp_path)


@pytest.mark.parametrize("value", [".inf", "-.inf", ".nan", ".NaN", "1e400"])
@pytest.mark.parametrize("key", ["train.lr", "train.clip", "train.lr_decay", "model.dropout"])
def test_non_finite_numbers_are_refused_at_validation(tmp_path, key, value):
    with pytest.raises(SpecError) as e:
        load_spec(write(tmp_path, BASE), [f"{key}={value}"])
    msg = str(e.value)
    assert f"{key}: " in msg and "\n" not in msg
    if key != "model.dropout":  # (bounded above: "1e400" there may be refused as "less than 1" first)
        assert f"{key}: must be a finite number" in msg


@pytest.mark.parametrize("item", ["train..lr=1", ".lr=1", "train.=1", "train. .lr=1"])
def test_override_keys_with_empty_parts_are_refused(item):
    with pytest.raises(SpecError, match="empty part"):
        apply_overrides(BASE, [item])
