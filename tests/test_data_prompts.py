"""render() against the official LongLaMP rule (see percli/data/prompts.py), with expected strings written by hand."""

from __future__ import annotations

import pytest
from transformers import BertTokenizerFast

from percli.data.prompts import contriever_tokenizer, render
from percli.errors import DataError

REVIEW_INPUT = ('Generate the review text written by a reviewer who has a given an overall rating of "4.0" for a '
                'product with description "Cast iron pan". The summary of the review text is "Heavy but good".')
R1 = {"overall": 5.0, "description": "Stainless Steel Kettle (1.7L)", "summary": "Works great!",
      "reviewText": "I've used it daily; boils 1.5L in 3 minutes. Café-quality tea [really]."}
R2 = {"overall": "2.0", "description": "Müller's Grinder", "summary": "Meh (too loud)",
      "reviewText": "Ran 26.2 miles — didn't stop! Naïve me thought…"}
R3 = {"overall": 3, "description": "", "summary": "OK", "reviewText": "Fine."}
R4 = {"overall": 1.0, "description": "Lamp", "summary": "No", "reviewText": "Broke after 2 days (sadly)."}
R1_S = ('"5.0" is a rating for the product with description "Stainless Steel Kettle (1.7L)". "Works great!" is '
        'summary for "i \' ve used it daily ; boils 1. 5l in 3 minutes. cafe - quality tea [ really ]." ')
R2_S = ('"2.0" is a rating for the product with description "Müller\'s Grinder". "Meh (too loud)" is summary for '
        '"ran 26. 2 miles — didn \' t stop! naive me thought …" ')
R3_S = '"3" is a rating for the product with description "". "OK" is summary for "fine." '
R4_S = '"1.0" is a rating for the product with description "Lamp". "No" is summary for "broke after 2 days ( sadly )." '
REVIEW_SUFFIX = ". Following the given patterns " + REVIEW_INPUT


@pytest.mark.parametrize("k, expected", [
    (1, R1_S + REVIEW_SUFFIX),
    (2, R1_S + ", and " + R2_S + REVIEW_SUFFIX),
    (3, R1_S + ", and " + R2_S + ", and " + R3_S + REVIEW_SUFFIX),
    (4, R1_S + ", and " + R2_S + ", and " + R3_S + ", and " + R4_S + REVIEW_SUFFIX),
])
def test_review_prompt_k1_to_k4(k: int, expected: str) -> None:
    assert render("review", REVIEW_INPUT, [R1, R2, R3, R4][:k]) == expected


ABSTRACT_INPUT = ('Generate the abstract for the title "Sparse Attention at Scale" using the following items: '
                  '1. long context 2. efficient kernels')
A1 = {"title": "On BERT-like Models: A Study", "year": 2020, "id": "a1",
      "abstract": "We propose {BERT-like} models: 93.78% F1 (vs. 90.1%) on SQuAD v2.0 — Müller's idea."}
A2 = {"title": "Graphs (GNNs) & you", "abstract": "The user's model achieves 93.78% i.e. better."}
A3 = {"title": "T3", "abstract": "3D   space.\nIn it,   we   act."}
A4 = {"title": "Zero", "abstract": "Naïve Bayes [NB] isn't dead!"}
A1_S = ('"we propose { bert - like } models : 93. 78 % f1 ( vs. 90. 1 % ) on squad v2. 0 — muller \' s idea." '
        'is the abstract for the title "On BERT-like Models: A Study"')
A2_S = '"the user \' s model achieves 93. 78 % i. e. better." is the abstract for the title "Graphs (GNNs) & you"'
A3_S = '"3d space. in it, we act." is the abstract for the title "T3"'
A4_S = '"naive bayes [ nb ] isn \' t dead!" is the abstract for the title "Zero"'
ABSTRACT_SUFFIX = (". Use the above abstracts as context to understand the style and language of the user and, "
                   + ABSTRACT_INPUT)


@pytest.mark.parametrize("k, expected", [
    (1, A1_S + ABSTRACT_SUFFIX),
    (2, A1_S + ", and " + A2_S + ABSTRACT_SUFFIX),
    (3, A1_S + ", and " + A2_S + ", and " + A3_S + ABSTRACT_SUFFIX),
    (4, A1_S + ", and " + A2_S + ", and " + A3_S + ", and " + A4_S + ABSTRACT_SUFFIX),
])
def test_abstract_prompt_k1_to_k4(k: int, expected: str) -> None:
    assert render("abstract", ABSTRACT_INPUT, [A1, A2, A3, A4][:k]) == expected


TOPIC_INPUT = "Generate the content for a reddit post My cat learned to open doors"
T1 = {"summary": "My first marathon (Boston '19)", "content": "Ran 26.2 miles — didn't stop! Naïve me thought…",
      "author": "u1", "id": "t1"}
T2 = {"summary": "[Help] 3 kids, 1 car", "content": "We're a family of 5 (plus a dog)."}
T3 = {"summary": "Café review", "content": "Crème brûlée was 10/10."}
T4 = {"summary": "x", "content": "Hello, World?"}
T1_S = '"My first marathon (Boston \'19)" is a summary for "ran 26. 2 miles — didn \' t stop! naive me thought …" '
T2_S = '"[Help] 3 kids, 1 car" is a summary for "we \' re a family of 5 ( plus a dog )." '
T3_S = '"Café review" is a summary for "creme brulee was 10 / 10." '
T4_S = '"x" is a summary for "hello, world?" '
TOPIC_SUFFIX = ". Following the given patterns, " + TOPIC_INPUT


@pytest.mark.parametrize("k, expected", [
    (1, T1_S + TOPIC_SUFFIX),
    (2, T1_S + ", and " + T2_S + TOPIC_SUFFIX),
    (3, T1_S + ", and " + T2_S + ", and " + T3_S + TOPIC_SUFFIX),
    (4, T1_S + ", and " + T2_S + ", and " + T3_S + ", and " + T4_S + TOPIC_SUFFIX),
])
def test_topic_prompt_k1_to_k4(k: int, expected: str) -> None:
    assert render("topic", TOPIC_INPUT, [T1, T2, T3, T4][:k]) == expected


# Single-piece words, so word count == word-piece count.
WORDS = ["the", "cat", "sat", "on", "a", "mat"]


def _words(n: int) -> list[str]:
    return [WORDS[i % len(WORDS)] for i in range(n)]


def test_main_text_keeps_510_word_pieces() -> None:
    # 512 tokens include [CLS] and [SEP]: 509 words + 'zorbleck' (z ##or ##ble ##ck) keeps only its first piece.
    text = " ".join(_words(509)) + " zorbleck tail words"
    expected_main = " ".join(_words(509)) + " z"
    assert render("topic", "in", [{"summary": "s", "content": text}]) == (
        f'"s" is a summary for "{expected_main}" . Following the given patterns, in')
    long_review = {**R3, "reviewText": " ".join(_words(600))}
    assert render("review", "in", [long_review]) == (
        f'"3" is a rating for the product with description "". "OK" is summary for "{" ".join(_words(510))}" '
        ". Following the given patterns in")


def test_abstract_cut_to_750_words_before_tokenizing() -> None:
    # Zero-width spaces are words for str.split() but vanish in BERT's normaliser: only the 750-word cut
    # can remove 'omega'.
    text = "alpha" + " \u200b" * 800 + " omega"
    assert render("abstract", "in", [{"title": "t", "abstract": text}]).startswith('"alpha" is the abstract')
    # A caller's tokenizer with a longer limit: 800 single-piece words -> exactly 750 survive.
    tok = BertTokenizerFast(vocab=contriever_tokenizer().vocab, do_lower_case=True, model_max_length=4096)
    out = render("abstract", "in", [{"title": "t", "abstract": " ".join(_words(800))}], tokenizer=tok)
    assert out == f'"{" ".join(_words(750))}" is the abstract for the title "t". Use the above abstracts as ' \
                  "context to understand the style and language of the user and, in"
    # Topic and review items are not word-cut: with the long tokenizer all 800 words survive.
    out = render("topic", "in", [{"summary": "s", "content": " ".join(_words(800))}], tokenizer=tok)
    assert out == f'"s" is a summary for "{" ".join(_words(800))}" . Following the given patterns, in'


def test_contriever_tokenizer_has_bert_base_uncased_vocab() -> None:
    tok = contriever_tokenizer()
    assert len(tok) == 30522
    assert tok.model_max_length == 512
    assert tok.convert_tokens_to_ids(["[PAD]", "[UNK]", "[CLS]", "[SEP]", "the"]) == [0, 100, 101, 102, 1996]


def test_empty_profile_gives_the_input_and_bad_task_fails() -> None:
    assert render("review", REVIEW_INPUT, []) == REVIEW_INPUT
    with pytest.raises(DataError, match="task='email'"):
        render("email", "x", [R1])
