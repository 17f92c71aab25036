"""The study preset (conf/experiment/study.yaml) has the regime results/study.md declares, and its synthetic targets
fit the training target length and the generation length, so every planted mention is trained on and can be
generated."""

from __future__ import annotations

import runpy

from helpers import REPO, composed

from percli.data.collate import encode_examples
from percli.data.longlamp import load_examples
from percli.models import load_tokenizer


def test_the_study_regime() -> None:
    cfg = composed("train", "experiment=study")
    d, t = cfg.data, cfg.train
    assert (d.num_users, d.examples_per_user, d.val_users, d.test_users, d.eval_examples_per_user) == (64, 1, 48, 144, 1)
    assert t.epochs >= 2 and t.max_steps is None and t.warmup_ratio > 0 and cfg.model.name == "smollm2-135m"


def test_every_planted_mention_is_trained_on_and_fits_the_generation() -> None:
    cfg = composed("train", "experiment=study")
    tok = load_tokenizer(cfg.model)
    for split in ("train", "val", "test"):
        examples = load_examples(cfg, split)
        pairs, report = encode_examples(examples, tok, cfg.data)
        assert len(pairs) == len(examples) and report.responses_cut == 0, split
        assert max(len(p.response_ids) for p in pairs) <= cfg.eval.max_new_tokens, split
        for ex, pair in zip(examples, pairs):
            # Each truth span lies on planted tokens: their text holds every name the target mentions.
            planted = tok.decode([i for i, m in zip(pair.response_ids, pair.planted) if m])
            assert all(s["word"].split()[-1] in planted for s in ex.meta["planted_spans"]), ex.id
            assert len(ex.meta["planted_spans"]) >= 2


def test_the_study_script_sizes_its_budget_from_the_preset() -> None:
    study = runpy.run_path(str(REPO / "scripts" / "study.py"))
    cfg = composed("train", "experiment=study")
    d, t = cfg.data, cfg.train
    assert study["STEPS_PER_RUN"] == d.num_users * d.examples_per_user // (t.batch_size * t.grad_accum) * t.epochs
    assert (study["VAL_USERS"], study["TEST_USERS"]) == (d.val_users, d.test_users)
    # 6 arms x 3 lrs x 2 pilot seeds; 2 pilot test scorings and 2 probes per arm, 1 untrained probe; 12 + 12 +
    # 4 x 6 seeds in all
    assert study["work"]() == {"pilot": 36, "tests": 12, "main": 36, "probes": 13, "processes": 97, "steps": 2304,
                               "val_examples": 1728, "test_examples": 6912}
