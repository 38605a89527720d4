"""The examples run as written (each starts its own server on a free loopback port and stops it)."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

EXAMPLES = Path(__file__).resolve().parent.parent / "examples"


def test_atomic_updates_example() -> None:
    proc = subprocess.run([sys.executable, str(EXAMPLES / "atomic_updates.py")], capture_output=True, text=True,
                          timeout=60, check=False)
    assert proc.returncode == 0, proc.stderr
    out = proc.stdout
    assert "hits: 1 3" in out
    assert "session: {'user': 'ann b.', 'cart': [{'sku': 42}]}" in out
    assert "pipelined: 3 [3, KeyError('nope')]" in out
    assert "bank unchanged: {'alice': 100, 'bob': 0}" in out
    assert "transferred: True {'alice': 70, 'bob': 30}" in out
    assert "lock held with fencing token" in out


def test_flask_recipes_example() -> None:
    proc = subprocess.run([sys.executable, str(EXAMPLES / "flask_recipes.py")], capture_output=True, text=True,
                          timeout=60, check=False)
    assert proc.returncode == 0, proc.stderr
    out = proc.stdout
    assert "cache: computed 1 time(s), same answer: True" in out  # the second request came from the cache
    assert "queue: worker got {'job': {'id': 'j1', 'n': 12}, 'square': 144}" in out
    assert "events: received ('events', {'done': 'j1'})" in out
    assert "queue: in flight after the job: []" in out
