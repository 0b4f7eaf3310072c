"""No POSIX-only module is imported at module level: certpin imports on Windows too."""

from __future__ import annotations

import ast
import subprocess
import sys
from pathlib import Path

import certpin

POSIX_ONLY = {"fcntl", "termios", "pwd", "grp", "resource", "posix", "tty", "pty"}
SRC = Path(certpin.__file__).parent


def _module_level_imports(path: Path) -> set[str]:
    tree = ast.parse(path.read_text(encoding="utf-8"))
    names: set[str] = set()
    for node in tree.body:  # module level only; imports inside functions run where needed
        if isinstance(node, ast.Import):
            names |= {alias.name.split(".")[0] for alias in node.names}
        elif isinstance(node, ast.ImportFrom) and node.module and not node.level:
            names.add(node.module.split(".")[0])
    return names


def test_no_module_imports_a_posix_only_module_at_import_time() -> None:
    files = sorted(SRC.rglob("*.py"))
    assert len(files) > 40
    offenders = {
        str(f.relative_to(SRC)): sorted(_module_level_imports(f) & POSIX_ONLY) for f in files
    }
    assert {k: v for k, v in offenders.items() if v} == {}


def test_the_scan_sees_a_module_level_import(tmp_path: Path) -> None:
    # The failing twin of the scan: it does flag a top-level fcntl import.
    bad = tmp_path / "bad.py"
    bad.write_text("import fcntl\n\ndef f():\n    import termios\n")
    assert _module_level_imports(bad) & POSIX_ONLY == {"fcntl"}


def test_state_classes_import_without_fcntl() -> None:
    # What Windows looks like to an import: `import fcntl` fails.
    code = (
        "import sys; sys.modules['fcntl'] = None\n"
        "import certpin\n"
        "from certpin.dynamic.tofu import KnownPins\n"
        "from certpin.dynamic.provider import DynamicPolicy\n"
        "from certpin._io import atomic\n"
        "print(KnownPins.__name__, DynamicPolicy.__name__)\n"
    )
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=60)
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout.split() == ["KnownPins", "DynamicPolicy"]
