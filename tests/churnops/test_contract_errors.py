"""Bad input: a contract file with mistakes is one error listing every problem by YAML path; a
DATASET that names nothing lists the bundled data sets."""

from __future__ import annotations

import pytest
import yaml


def test_every_mistake_of_a_contract_file_in_one_error(tmp_path):
    from churnops.contract import DATASETS_DIR, ContractFileError, load_any_contract, load_contract

    raw = yaml.safe_load((DATASETS_DIR / "bank_churners.yaml").read_text())
    raw["features"]["customer_age"]["kind"] = "numbr"  # not a kind
    raw["features"]["gender"]["categories"] = []  # a categorical without categories
    raw["target"]["positive"] = "Gone"  # not among the labels
    raw["min_rows"] = "many"  # not an integer
    del raw["name"]  # required
    p = tmp_path / "mine.yaml"
    p.write_text(yaml.safe_dump(raw))
    for load in (load_contract, load_any_contract):
        with pytest.raises(ContractFileError) as err:
            load(str(p))
        problems = err.value.problems
        assert [x.split(":", 1)[0] for x in problems] == [
            "name",
            "target",
            "min_rows",
            "features.customer_age.kind",
            "features.gender",
        ], problems
        text = str(err.value)
        assert text.startswith(f"data contract {p} has 5 problem(s):")
        assert "'numbr'" in text and "'many'" in text and "positive 'Gone' is not among labels" in text
        assert "a categorical feature needs its categories listed" in text


def test_image_contract_mistakes_by_yaml_path(tmp_path):
    from churnops.contract import DATASETS_DIR, ContractFileError, load_any_contract

    raw = yaml.safe_load((DATASETS_DIR / "raw_digits.yaml").read_text())
    raw["classes"] = ["0", "0"]
    raw["image"]["height"] = 4
    p = tmp_path / "img.yaml"
    p.write_text(yaml.safe_dump(raw))
    with pytest.raises(ContractFileError) as err:
        load_any_contract(str(p))
    assert [x.split(":", 1)[0] for x in err.value.problems] == ["classes", "image.height"]


def test_a_contract_that_is_not_a_mapping(tmp_path):
    from churnops.contract import ContractFileError, load_contract

    p = tmp_path / "list.yaml"
    p.write_text("- a\n- b\n")
    with pytest.raises(ContractFileError, match=r"\(top level\): expected a mapping of contract fields, got list"):
        load_contract(str(p))


def test_a_dataset_that_names_nothing_lists_the_bundled_ones():
    from churnops.contract import bundled_datasets, load_any_contract
    from churnops.model_line import for_dataset
    from churnops.settings import Settings

    assert {"bank_churners", "diabetes", "raw_digits"} <= set(bundled_datasets())
    for call in (lambda: load_any_contract("diabtes"), lambda: for_dataset(Settings(_env_file=None), "diabtes")):
        with pytest.raises(FileNotFoundError) as err:
            call()
        assert "DATASET='diabtes' names no data set" in str(err.value)
        assert str(bundled_datasets()) in str(err.value)
