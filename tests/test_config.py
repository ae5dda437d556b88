import math

import pytest

from bnviz.config import LIMITS, Config, ConfigError, check, from_query, problems


def test_query_round_trip_restores_the_config():
    cfg = Config(dataset="moons", steps=321, lr=0.0125, momentum=None, placement="after", bias_with_norm=True)
    restored, notes = from_query(cfg.to_query())
    assert restored == cfg and notes == []


def test_defaults_serialise_to_an_empty_query():
    assert Config().to_query() == {}


@pytest.mark.parametrize("raw", ["1e309", "nan", "inf", "-inf", "abc", "", "[]", "x" * 10_000])
def test_bad_numbers_keep_the_default_with_a_note(raw):
    cfg, notes = from_query({"steps": raw})
    assert cfg.steps == Config().steps
    assert len(notes) == 1


def test_out_of_range_values_are_clamped_with_a_note():
    cfg, notes = from_query({"steps": "10000000", "width": "-5", "lr": "1e-99", "depth": "3.7"})
    assert cfg.steps == LIMITS["steps"][1]
    assert cfg.width == LIMITS["width"][0]
    assert cfg.lr == LIMITS["lr"][0]
    assert cfg.depth == 4
    assert len(notes) == 4


def test_unknown_keys_and_choices_are_ignored_with_notes():
    cfg, notes = from_query({"evil": "<script>", "norm": "superNorm", "activation": "relu"})
    assert cfg == Config()
    assert len(notes) == 2


def test_batch_of_one_with_batchnorm_is_explained():
    cfg = Config(batch_size=1)
    [msg] = problems(cfg)
    assert "batch of one" in msg and "LayerNorm" in msg
    with pytest.raises(ConfigError):
        check(cfg)
    assert problems(cfg.replace(norm="layernorm")) == []
    assert problems(cfg.replace(norm="none")) == []


def test_configs_hash_by_value():
    assert hash(Config(seed=3)) == hash(Config(seed=3))
    assert {Config(seed=3): 1}[Config().replace(seed=3)] == 1
    assert not math.isnan(Config().lr)
