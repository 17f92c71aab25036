"""LongLaMP data: sources (hub | local | synthetic), retrieval, official prompts, paired token streams.

Pipeline: `longlamp.load_examples` (a source from `longlamp.SOURCES`, validation, subsampling, then
`retrieval.retrieve` with `retrieval.RETRIEVERS`) -> `prompts` (the official templates) -> `collate`
(`encode_examples`, `PairCollator`). `example` holds the `Example` type, `dense` the dense retrievers,
`synthetic` the generator, `stats` the `percli data` command.
"""
