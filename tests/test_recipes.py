"""Recipes fill in options; the command line wins; every recipe is a valid configuration."""

import json
import shlex

import pytest

from conftest import run_cli
from rnnlab import recipes
from rnnlab.config import TrainConfig
from rnnlab.errors import RnnlabError

ISSUE_RECIPES = ("book", "char-lstm", "shakespeare", "ptb-small", "ptb-medium")


def test_the_recipes_the_project_promises_exist():
    assert set(ISSUE_RECIPES) <= set(recipes.RECIPES)


@pytest.mark.parametrize("name", list(recipes.RECIPES))
def test_every_recipe_is_a_valid_training_configuration(name):
    cfg = TrainConfig.from_options(recipes.options_for(name, {}))
    for option, value in recipes.RECIPES[name].options.items():
        assert cfg.options()[option] == value, option


def test_the_book_recipe_is_the_default_configuration():
    book = TrainConfig.from_options(recipes.options_for("book", {}))
    assert book == TrainConfig()


def test_options_given_on_the_command_line_win():
    options = recipes.options_for("char-lstm", {"hidden": 128, "source": "my.txt"})
    assert options["hidden"] == 128 and options["source"] == "my.txt"
    assert options["cell"] == "lstm"  # the rest is the recipe's


def test_an_unknown_recipe_names_the_known_ones():
    with pytest.raises(RnnlabError, match="unknown recipe 'gpt'.*char-lstm"):
        recipes.options_for("gpt", {})


@pytest.mark.parametrize("name", list(recipes.RECIPES))
def test_the_printed_options_read_back_as_the_same_configuration(name):
    """`rnnlab recipes` prints each recipe as flags; typing them gives the same run."""
    from rnnlab.cli import build_parser

    line = recipes.command_line(recipes.RECIPES[name].options)
    args = build_parser().parse_args(["train", "--out", "run", *shlex.split(line)])
    given = {k: v for k, v in vars(args).items() if k in TrainConfig().options()}
    assert TrainConfig.from_options(given) == TrainConfig.from_options(
        recipes.options_for(name, {})
    )


def test_describe_lists_every_recipe_with_its_measurement():
    text = recipes.describe()
    for name, recipe in recipes.RECIPES.items():
        assert f"{name}\n" in text
        assert recipe.measured in text


@pytest.mark.parametrize("name", list(recipes.RECIPES))
@pytest.mark.slow
def test_every_recipe_trains_for_a_few_batches(name, tmp_path):
    """CI runs each recipe briefly (the full runs are benchmarks/recipes.py's job)."""
    out = tmp_path / name
    result = run_cli(
        "train",
        "--recipe",
        name,
        "--out",
        out,
        "--max-tokens",
        "20000",
        "--epochs",
        "1",
        "--time-limit",
        "0.02",
        "--quiet",
        check=0,
    )
    cfg = TrainConfig.from_dict(json.loads((out / "config.json").read_text()))
    for option, value in recipes.RECIPES[name].options.items():
        if option not in ("time_limit", "epochs"):  # given above
            assert cfg.options()[option] == value, option
    assert "rnnlab: error" not in result.stderr


def test_the_recipes_command_lists_them():
    from rnnlab import auto

    result = run_cli("recipes", check=0)
    assert result.stdout.strip() == auto.describe()
    assert result.stdout.startswith(recipes.describe()) and "\nauto\n" in result.stdout


@pytest.mark.slow
def test_a_recipe_cannot_be_resumed_into(tmp_path, clean_error):
    clean_error(
        run_cli("train", "--recipe", "book", "--out", tmp_path / "r", "--resume"), "--recipe"
    )
