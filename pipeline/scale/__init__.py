"""`python -m pipeline scale`: the whole `dvc repro` at the real competition's size, in a working copy, measured.

`sizes` says what is rendered and trained (the bench's full-size spec, a fraction of it, or a tiny rehearsal, with
the user's budget), `workdir` makes the working copy and writes its params, `measure` runs one command and reads
its wall time, peak memory and disk writes (through the small launcher `child_usage.py`), `report` turns the rows
into the table docs/SCALE.md holds, and `run` does it all in order.
"""
