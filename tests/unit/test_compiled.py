"""The mypyc-compiled domain modules (retention/compiled.py) give the very same
results as their sources, and are really the ones used when the build is current.

Each run is a child process, since whether a module is compiled is decided when
``retention`` is first imported. ``make unit`` (and ``make test``) build first.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

import retention.compiled as compiled

ROOT = Path(__file__).resolve().parents[2]

#: A generated history and the start of CDNOW through the agent's batch logic, then
#: the table/alert hashes of tests/hashes.py and which modules ran compiled.
SCRIPT = """
import json, sys, tempfile
from pathlib import Path
from itertools import islice
import retention.compiled as compiled
from retention.timeutil import parse_time
from streams.inputs import read_events
from tests.hashes import CDNOW_END, END, cdnow_path, dated_before, hashes, run
from tests.inprocess import generated_history

end = parse_time(END)
with tempfile.TemporaryDirectory() as tmp:
    records = dated_before(generated_history(Path(tmp), 400, 240, 5, end), end)
out = {"generated": hashes(run(records, end))}
cdnow_end = parse_time(CDNOW_END)
cdnow = dated_before(list(islice(read_events(cdnow_path(), "cdnow"), 6000)), cdnow_end)
out["cdnow"] = hashes(run(cdnow, cdnow_end))
out["compiled"] = compiled.in_use()
json.dump(out, sys.stdout)
"""


def _run(native: bool) -> dict[str, object]:
    env = dict(os.environ, CHURNWATCH_NATIVE="1" if native else "0", PYTHONPATH=str(ROOT))
    done = subprocess.run(
        [sys.executable, "-c", SCRIPT], cwd=ROOT, env=env, capture_output=True, text=True
    )
    assert done.returncode == 0, done.stderr[-3000:]
    result: dict[str, object] = json.loads(done.stdout)
    return result


def test_compiled_modules_give_the_same_results_as_their_sources() -> None:
    assert compiled.current(), "the compiled modules are missing or stale: run `make native`"
    native = _run(native=True)
    source = _run(native=False)
    names = sorted(name.removesuffix(".py") for name in compiled.MODULES)
    assert sorted(native.pop("compiled")) == names  # type: ignore[call-overload]
    assert source.pop("compiled") == []
    assert native == source


def test_a_stale_build_is_not_used(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """An edited source no longer matches the manifest, so its build is left alone."""
    package = tmp_path / "retention"
    package.mkdir()
    for name in compiled.MODULES:
        (package / name).write_text("x = 1\n")
    target = tmp_path / "native"
    target.mkdir()
    monkeypatch.setattr(compiled, "PACKAGE", package)
    monkeypatch.setattr(compiled, "MANIFEST", target / "manifest.json")
    monkeypatch.setattr(compiled, "TARGET", target)
    sources = {name: compiled._digest(package / name) for name in compiled.MODULES}
    manifest = {"python": sys.implementation.cache_tag, "sources": sources}
    (target / "manifest.json").write_text(json.dumps(manifest))
    monkeypatch.delenv("CHURNWATCH_NATIVE", raising=False)
    path: list[str] = []
    assert compiled.use_compiled(path) and path == [str(target / "retention")]
    (package / compiled.MODULES[0]).write_text("x = 2\n")
    path = []
    assert not compiled.use_compiled(path) and path == []
    monkeypatch.setenv("CHURNWATCH_NATIVE", "0")
    (package / compiled.MODULES[0]).write_text("x = 1\n")
    assert not compiled.use_compiled(path) and path == []
