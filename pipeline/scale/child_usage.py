"""`python pipeline/scale/child_usage.py OUT -- CMD ...`: run CMD, then write the resource usage of its whole process
tree to OUT as JSON (`max_rss_kib`: the largest single process; `oublock`: 512-byte blocks written), exiting with
CMD's status.

Why a separate small process: Linux counts a child's peak memory from the fork, before the exec, so a child forked
by a large process (the scale command holds torch, ~0.7 GiB) reports that process's size as its own peak. Started
from this interpreter (the standard library only, run by path with -I so the working copy's packages never load),
CMD's tree is measured from a few MB. `RUSAGE_CHILDREN` covers every descendant that was waited for: DVC, the
stage, its loader workers and process pools.
"""

from __future__ import annotations

import json
import resource
import signal
import subprocess
import sys


def main(argv: list[str]) -> int:
    if len(argv) < 3 or argv[1] != "--":
        print("usage: child_usage.py OUT -- CMD ...", file=sys.stderr)
        return 2
    out, cmd = argv[0], argv[2:]
    # Ctrl-C reaches CMD too (one process group): wait for it to end its own way. A handler, not SIG_IGN: an ignored
    # signal would be inherited by CMD, a handler is reset by its exec.
    signal.signal(signal.SIGINT, lambda *_: None)
    code = subprocess.call(cmd)
    usage = resource.getrusage(resource.RUSAGE_CHILDREN)
    with open(out, "w", encoding="utf-8") as f:
        json.dump({"max_rss_kib": usage.ru_maxrss, "oublock": usage.ru_oublock}, f)
    return code if code >= 0 else 128 - code  # killed by a signal: the shell's convention


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
