"""LongLaMP data: sources (hub | local | synthetic), retrieval, official prompts, paired token streams.

Modules: `longlamp` (Example, load_examples), `synthetic`, `retrieval`, `prompts` (render), `collate`
(encode_examples, PairCollator), `stats` (`percli data`). Submodules import heavy libraries lazily.
"""
