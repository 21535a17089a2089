"""The oldest ultralytics release of the support table, through the steps of tests/matrix.py: apply every
recipe, verify every generated YAML at its first scale and the stock models against the pristine files,
revert byte for byte, and the piecewise parser edit equal to the whole-file edit. (The middle and newest
releases and yolov5 go through the fuller tests beside this one.)"""

import pytest

import matrix
import upstream

pytestmark = pytest.mark.real


def test_oldest_supported_ultralytics_release_applies_verifies_and_reverts():
    row = matrix.run_release(f"ultralytics=={upstream.OLDEST_ULTRALYTICS}", full_ladder=False)
    assert "error" not in row, row
    assert len(row["recipes"]) >= 14
    failed = {name: result for name, result in row["recipes"].items() if result != "pass"}
    assert not failed, failed
    assert row["stock"] == "passed"
    assert row["revert"] == "identical"
