"""Spec strings (``name(key=value)``, parsed with literal_eval, never eval), RunConfig ids, Parquet schemas."""

from __future__ import annotations

import dataclasses
import hashlib
import json
import keyword

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from optbench.errors import OptbenchError
from optbench.spec import (
    CONFIG_FIELDS,
    TRACE_COLUMNS,
    RunConfig,
    RunSummary,
    Spec,
    parse_spec,
    runs_schema,
    split_top_level,
    traces_schema,
)

# ------------------------------------------------------------------------------------------- parse_spec


def test_name_only():
    spec = parse_spec("sgd")
    assert spec == Spec("sgd", ())
    assert spec.kw == {}
    assert spec.canonical() == "sgd"
    assert not spec.is_import_path


def test_keywords_are_parsed_as_python_literals():
    spec = parse_spec("steplr(step_size=5, gamma=0.8)")
    assert spec.name == "steplr"
    assert spec.kw == {"step_size": 5, "gamma": 0.8}
    assert isinstance(spec.kw["step_size"], int)


@pytest.mark.parametrize(
    ("text", "key", "value"),
    [
        ("x(v=-1e-3)", "v", -0.001),
        ("x(v=True)", "v", True),
        ("x(v=None)", "v", None),
        ("x(v='tanh')", "v", "tanh"),
        ('x(v="tanh")', "v", "tanh"),
        ("x(v=(-1.5, 2.0))", "v", (-1.5, 2.0)),
        ("x(v=[10, 20])", "v", [10, 20]),
        (
            "x(v=['linearlr(total_iters=10)', 'cosineannealinglr(T_max=90)'])",
            "v",
            ["linearlr(total_iters=10)", "cosineannealinglr(T_max=90)"],
        ),
    ],
)
def test_literal_values(text, key, value):
    assert parse_spec(text).kw[key] == value


def test_empty_parentheses_and_whitespace():
    assert parse_spec("  adam()  ") == Spec("adam", ())
    assert parse_spec("adam( lr = 0.1 )").kw == {"lr": 0.1}


def test_import_path_name():
    spec = parse_spec("mypkg.opt:Lion(betas=(0.9, 0.99))")
    assert spec.is_import_path
    assert spec.name == "mypkg.opt:Lion"
    assert spec.kw == {"betas": (0.9, 0.99)}


def test_canonical_form_sorts_keywords_and_uses_repr():
    a = parse_spec("steplr(step_size=5, gamma=0.8)")
    b = parse_spec("steplr( gamma = 0.80 ,step_size=5)")
    assert a == b
    assert a.canonical() == b.canonical() == "steplr(gamma=0.8, step_size=5)"
    assert str(a) == a.canonical()
    assert parse_spec("m(activation='tanh')").canonical() == "m(activation='tanh')"


_keys = st.from_regex(r"[a-z_][a-z0-9_]{0,8}", fullmatch=True).filter(lambda k: not keyword.iskeyword(k))
_scalars = st.one_of(
    st.integers(-(10**6), 10**6),
    st.floats(allow_nan=False, allow_infinity=False, width=64),
    st.booleans(),
    st.none(),
    st.text(alphabet="abcxyz_-. ()", max_size=8),
)
_values = st.one_of(_scalars, st.tuples(_scalars, _scalars), st.lists(_scalars, max_size=3))


@settings(max_examples=60, deadline=None, database=None)
@given(kwargs=st.dictionaries(_keys, _values, max_size=4))
def test_canonical_form_round_trips(kwargs):
    text = "entry(" + ", ".join(f"{k}={v!r}" for k, v in kwargs.items()) + ")"
    spec = parse_spec(text)
    assert spec.kw == kwargs
    assert parse_spec(spec.canonical()) == spec


@pytest.mark.parametrize(
    ("text", "named"),
    [
        ("", "empty"),
        ("   ", "empty"),
        ("steplr(step_size=5", "')'"),
        ("(gamma=0.8)", "bad name"),
        ("step lr(gamma=0.8)", "step lr"),
        ("1cycle", "1cycle"),
        ("steplr(5)", "key=value"),
        ("steplr(**kw)", "**"),
        ("steplr(gamma=)", "key=value"),
        ("steplr(gamma=0.8) and steplr(gamma=0.9)", "key=value"),
    ],
)
def test_malformed_specs_are_errors_naming_the_problem(text, named):
    with pytest.raises(OptbenchError) as err:
        parse_spec(text, what="scheduler")
    assert named in str(err.value)


@pytest.mark.parametrize(
    ("text", "bad"),
    [
        ("adam(betas=foo)", "foo"),
        ("adam(lr=1+1)", "'1+1'"),  # quoted as typed
        ("adam(lr=__import__('os').getcwd())", "__import__"),
        ("adam(lr=[x for x in range(3)])", "range"),
    ],
)
def test_non_literal_values_are_named_in_the_error(text, bad):
    with pytest.raises(OptbenchError) as err:
        parse_spec(text, what="optimizer")
    message = str(err.value)
    assert bad in message
    assert "optimizer" in message
    assert "\n" not in message


def test_values_are_never_evaluated(tmp_path):
    target = tmp_path / "pwned"
    with pytest.raises(OptbenchError):
        parse_spec(f"sgd(lr=open({str(target)!r}, 'w'))")
    assert not target.exists()


@pytest.mark.parametrize(
    "text",
    [
        "steplr(step_size=5)(gamma=0.1)",  # a second call: step_size would be silently dropped
        "steplr(step_size=5).other(gamma=0.1)",
        "steplr(step_size=5)[0](gamma=0.1)",
    ],
)
def test_chained_calls_are_malformed_not_silently_truncated(text):
    """Only ``name(k=v, ...)`` is valid; anything after the first call must not be accepted."""
    with pytest.raises(OptbenchError):
        parse_spec(text, what="scheduler")


def test_repeated_keyword_is_an_error():
    """``gamma`` given twice is ambiguous: an error, not "the last one wins"."""
    with pytest.raises(OptbenchError) as err:
        parse_spec("steplr(gamma=0.5, gamma=0.9)", what="scheduler")
    assert "gamma" in str(err.value)


# --------------------------------------------------------------------------------------- split_top_level


@pytest.mark.parametrize(
    ("text", "parts"),
    [
        ("sgd,adam", ["sgd", "adam"]),
        ("sgd, adam(betas=(0.9, 0.99)), steplr", ["sgd", "adam(betas=(0.9, 0.99))", "steplr"]),
        (
            "sequentiallr(schedulers=['a', 'b'], milestones=[1, 2]),none",
            ["sequentiallr(schedulers=['a', 'b'], milestones=[1, 2])", "none"],
        ),
        ("", []),
    ],
)
def test_split_top_level_keeps_commas_inside_brackets(text, parts):
    assert split_top_level(text) == parts


@pytest.mark.parametrize("text", ["sgd,,adam", "sgd,", ",sgd", "0.1, ,0.3"])
def test_an_empty_item_is_an_error_not_silently_dropped(text):
    with pytest.raises(OptbenchError, match="empty value"):
        split_top_level(text)


# -------------------------------------------------------------------------------------------- RunConfig


def test_run_id_is_the_documented_hash_of_the_full_config():
    config = RunConfig(problem="quadratic", optimizer="sgd", lr=0.1, steps=50)
    fields = dataclasses.asdict(config)
    del fields["sharpness_every"]  # an optional field: hashed only when set
    payload = json.dumps(fields, sort_keys=True, separators=(",", ":"))
    assert config.run_id() == hashlib.sha256(payload.encode()).hexdigest()[:16]
    assert len(config.run_id()) == 16
    int(config.run_id(), 16)
    tracked = config.replace(sharpness_every=10)
    payload = json.dumps(dataclasses.asdict(tracked), sort_keys=True, separators=(",", ":"))
    assert tracked.run_id() == hashlib.sha256(payload.encode()).hexdigest()[:16]


def test_run_ids_written_before_sharpness_tracking_stay_the_same():
    """Computed on main before ``sharpness_every`` existed: folders written then resume and verify."""
    assert RunConfig().run_id() == "4a21fc30ac8ff439"
    old = RunConfig(problem="mlp-regression", optimizer="adam", lr=0.1, momentum=0.9, steps=50, batch_size=32)
    assert old.run_id() == "134edb3c8a799f29"
    assert old.replace(sharpness_every=None).run_id() == "134edb3c8a799f29"  # read back as null
    assert old.replace(sharpness_every=100).run_id() != "134edb3c8a799f29"


@pytest.mark.parametrize("field_name", CONFIG_FIELDS)
def test_every_config_field_changes_the_run_id(field_name):
    base = RunConfig()
    other = {
        "problem": "rosenbrock",
        "optimizer": "adam",
        "lr": 0.02,
        "momentum": 0.5,
        "scheduler": "steplr",
        "init": "normal",
        "loss": "mse",
        "precision": "bf16",
        "device": "cuda",
        "seed": 1,
        "steps": 99,
        "batch_size": 8,
        "head_lr_scale": 0.5,
        "freeze": 1,
        "sharpness_every": 10,
    }
    assert set(other) == set(CONFIG_FIELDS), "new RunConfig field: add it here"
    assert base.replace(**{field_name: other[field_name]}).run_id() != base.run_id()


def test_run_id_is_stable_and_replace_returns_a_new_config():
    a = RunConfig(lr=0.1)
    assert a.run_id() == RunConfig(lr=0.1).run_id()
    b = a.replace(lr=0.2)
    assert a.lr == 0.1 and b.lr == 0.2
    with pytest.raises(dataclasses.FrozenInstanceError):
        a.lr = 0.3  # type: ignore[misc]


# ---------------------------------------------------------------------------------------------- schemas


def test_runs_schema_is_run_id_then_config_then_summary():
    names = runs_schema().names
    summary_fields = [f.name for f in dataclasses.fields(RunSummary) if f.name != "extras"]
    assert names == ["run_id", *CONFIG_FIELDS, *summary_fields]


def test_traces_schema_matches_trace_columns():
    import pyarrow as pa

    schema = traces_schema()
    assert tuple(schema.names) == TRACE_COLUMNS
    assert schema.field("step").type == pa.int64()
    assert schema.field("skipped_step").type == pa.bool_()
    assert all(
        schema.field(c).type == pa.float64()
        for c in TRACE_COLUMNS
        if c not in ("run_id", "step", "skipped_step")
    )
