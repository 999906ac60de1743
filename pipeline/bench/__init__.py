"""`python -m pipeline.bench`: the pipeline's stages timed side by side with the naive way and the machine's bounds.

One module per benchmark (scoring, loading, training, embedding, indexing); `dataset` renders and caches the
competition-scale synthetic set they share, `report` prints the table. See docs/BENCH.md.
"""
