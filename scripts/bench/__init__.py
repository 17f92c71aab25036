"""`make bench` / `make bench-peers`: percli's step time and memory against CE, TRL and the naive PerCE.

One module per idea: `stats` (interleaved pairs, ratio CIs, the two clocks), `data` (LongLaMP-review
records of chosen lengths), `subject` (percli's own Trainer step), `peer` (TRL SFTTrainer), `naive`
(full-logit PerCE), `overhead` (PerCE / CE and its scaling with r), `memory` + `child` (peak memory in
fresh processes), `generation` (eval tokens/s), `report` (bench.md, bench_scaling.png), `__main__` (the
command). It lives under scripts/ because the installed CLI never needs it; tests import it from the
checkout (pytest's pythonpath is the repository root).
"""
