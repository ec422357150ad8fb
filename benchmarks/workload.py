"""The peers' workload (``/work/shared/peers/workload.py``), importable by our benchmarks.

N keyed records; key = a word of a seeded 10,000-word vocabulary drawn Zipf-style
(weight 1/rank); value ``{"n":1}``; event timestamp ``base + i`` ms (200 s of event time
for 200k records, so 20 tumbling 10 s windows). With the default seed and N = 200,000:
9,674 distinct keys. The expected tables are ``Counter`` s over the same keys: every run
is checked against them.
"""

from __future__ import annotations

import random
import resource
import string
from collections import Counter

VOCABULARY = 10_000
SEED = 42
WINDOW_S = 10
VALUE = b'{"n":1}'


def vocabulary(seed: int = SEED, size: int = VOCABULARY) -> list[str]:
    rnd = random.Random(seed)
    words: list[str] = []
    seen: set[str] = set()
    while len(words) < size:
        word = "".join(rnd.choice(string.ascii_lowercase) for _ in range(rnd.randint(3, 10)))
        if word not in seen:
            seen.add(word)
            words.append(word)
    return words


def keys(n: int, seed: int = SEED) -> list[str]:
    """The ``n`` keys of the source topic, in production order."""
    words = vocabulary(seed)
    rnd = random.Random(seed + 1)
    return rnd.choices(words, weights=[1.0 / r for r in range(1, len(words) + 1)], k=n)


def expected_counts(n: int, seed: int = SEED) -> Counter[str]:
    return Counter(keys(n, seed))


def expected_window_counts(base_ts_ms: int, n: int, seed: int = SEED) -> Counter[tuple[str, int]]:
    """Counter keyed by (word, window start in seconds) for tumbling WINDOW_S windows."""
    counts: Counter[tuple[str, int]] = Counter()
    for i, key in enumerate(keys(n, seed)):
        start = ((base_ts_ms + i) // 1000) // WINDOW_S * WINDOW_S
        counts[(key, start)] += 1
    return counts


def big_key(i: int) -> str:
    """Key ``i`` of the 1M-key table workload (every key distinct)."""
    return f"key-{i:07d}"


def peak_rss_mb() -> float:
    """This process's peak resident set size in MB. From ``VmHWM``: ``ru_maxrss`` is not
    reset by exec, so a process started by a bigger parent would report the parent's."""
    try:
        with open("/proc/self/status") as status:
            for line in status:
                if line.startswith("VmHWM:"):
                    return int(line.split()[1]) / 1024
    except OSError:
        pass
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
