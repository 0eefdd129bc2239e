"""The tests that need ../shared (the Pythia tokenizer) skip with a reason outside CI and fail in CI."""

import pytest
from conftest import PYTHIA_TOKENIZER, require_pythia_tokenizer


def test_missing_tokenizer_skips_with_the_reason_outside_ci(tmp_path, monkeypatch):
    monkeypatch.delenv("CI", raising=False)
    with pytest.raises(pytest.skip.Exception) as skipped:
        require_pythia_tokenizer(tmp_path / "pythia-20b-tokenizer.json")
    message = str(skipped.value)
    assert str(tmp_path / "pythia-20b-tokenizer.json") in message and "../shared" in message and "CI=true" in message


@pytest.mark.parametrize("value", ["true", "1", "TRUE"])
def test_missing_tokenizer_fails_in_ci(tmp_path, monkeypatch, value):
    monkeypatch.setenv("CI", value)
    with pytest.raises(pytest.fail.Exception, match="CI=true, so this fails"):
        require_pythia_tokenizer(tmp_path / "pythia-20b-tokenizer.json")


def test_present_tokenizer_is_returned(tmp_path, monkeypatch):
    monkeypatch.setenv("CI", "true")
    path = tmp_path / "tok.json"
    path.write_text("{}")
    assert require_pythia_tokenizer(path) == path
    assert PYTHIA_TOKENIZER.parts[-3:] == ("shared", "data", "pythia-20b-tokenizer.json")
