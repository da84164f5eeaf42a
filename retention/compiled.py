"""Compiled copies of the hot domain modules (mypyc), used only when they are current.

The per-event work (applying an event, scoring, the due search) is plain Python
with full type annotations; mypyc compiles those modules to C extensions from the
same source, so results are the same (tests/unit/test_compiled.py runs the
generated history with and without them and compares every record). ``make
native`` builds them into ``.cache/native`` with a manifest of the sources'
SHA-256; ``use_compiled`` (called by ``retention/__init__.py``) puts that folder
first on the package's path only if every source still matches its manifest
entry, so an edited module runs as source, never a stale build.
``CHURNWATCH_NATIVE=0`` turns them off (the equality test uses it).

    make native                 # build (``retention.compiled.build()``)
    churnwatch version          # says which modules run compiled

Written against mypy/mypyc 1.x (``mypyc.build.mypycify``). Modules listed here
must not define msgspec Structs: mypyc checks class attribute defaults against
their annotations, which ``msgspec.field(...)`` defaults fail.
"""

from __future__ import annotations

import hashlib
import json
import os
import sys
from pathlib import Path
from typing import Final

#: The modules compiled, by path within the ``retention`` package.
MODULES: Final = ("probe.py", "alerts.py", "apply.py", "periods.py", "risk.py", "history.py")
#: The shared library's name (a top-level module, on sys.path when in use).
GROUP: Final = "churnwatch_native"
PACKAGE: Final = Path(__file__).resolve().parent
TARGET: Final = PACKAGE.parent / ".cache" / "native"
MANIFEST: Final = TARGET / "manifest.json"


def _digest(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def current() -> bool:
    """Whether a build exists and was made from the sources as they are now."""
    try:
        manifest = json.loads(MANIFEST.read_text())
    except (OSError, ValueError):
        return False
    return manifest.get("python") == sys.implementation.cache_tag and all(
        manifest.get("sources", {}).get(name) == _digest(PACKAGE / name) for name in MODULES
    )


def use_compiled(package_path: list[str]) -> bool:
    """Put the build first on the package's path if it is current and wanted."""
    if os.environ.get("CHURNWATCH_NATIVE", "1") == "0" or not current():
        return False
    package_path.insert(0, str(TARGET / "retention"))
    if str(TARGET) not in sys.path:
        sys.path.append(str(TARGET))
    return True


def in_use() -> list[str]:
    """The modules of this package that run compiled in this process."""
    names = [name.removesuffix(".py") for name in MODULES]
    out = []
    for name in names:
        module = sys.modules.get(f"retention.{name}")
        if module is not None and not str(getattr(module, "__file__", "")).endswith(".py"):
            out.append(name)
    return out


def build() -> None:
    """Compile MODULES into TARGET and write the manifest (after the build only)."""
    import shutil
    import tempfile

    from mypyc.build import mypycify
    from setuptools import Distribution

    MANIFEST.unlink(missing_ok=True)
    shutil.rmtree(TARGET, ignore_errors=True)
    TARGET.mkdir(parents=True)
    sources = {name: _digest(PACKAGE / name) for name in MODULES}
    root = PACKAGE.parent
    cwd = os.getcwd()
    os.chdir(root)  # mypycify names modules by their path from here
    try:
        with tempfile.TemporaryDirectory() as temp:
            paths = [f"retention/{name}" for name in MODULES]
            extensions = mypycify(paths, opt_level="3", group_name=GROUP, target_dir=temp)
            dist = Distribution({"name": GROUP, "ext_modules": extensions})
            command = dist.get_command_obj("build_ext")
            command.build_lib = str(TARGET)
            command.build_temp = temp
            dist.run_command("build_ext")
    finally:
        os.chdir(cwd)
    tag = sys.implementation.cache_tag
    MANIFEST.write_text(json.dumps({"python": tag, "sources": sources}, indent=1))
    print(f"compiled {', '.join(MODULES)} into {TARGET}")
