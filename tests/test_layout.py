"""The package's shape: the service never imports the lab (measuring and training tools), not
when Gunicorn loads the app nor when the CLI runs a service command; modules and functions stay
small."""
from __future__ import annotations

import ast
import os
import subprocess
import sys
from pathlib import Path

from helpers import REPO

_LAB_MODULES = "print(sorted(m for m in sys.modules if m.startswith('ear.lab')))"


def _modules_after(code: str, where: Path) -> str:
    # Run in a folder of its own: importing ear.wsgi opens the catalog of EAR_DATA_DIR.
    result = subprocess.run([sys.executable, "-c", f"import sys\n{code}\n{_LAB_MODULES}"], cwd=where,
                            env={**os.environ, "EAR_DATA_DIR": str(where / "data")},
                            capture_output=True, text=True, timeout=120)
    assert result.returncode == 0, result.stderr
    return result.stdout.strip().splitlines()[-1]


def test_importing_the_app_imports_no_lab_module(tmp_path):
    assert _modules_after("import ear.app, ear.wsgi", tmp_path) == "[]"


def test_a_service_command_imports_no_lab_module(tmp_path):
    code = f"from ear.cli import main\nmain(['--data-dir', {str(tmp_path)!r}, 'tracks'])"
    assert _modules_after(code, tmp_path) == "[]"
    # ...and a lab command does (the check above can fail).
    code = "from ear.cli import main\ntry: main(['eval', '--help'])\nexcept SystemExit: pass"
    assert "ear.lab.eval" in _modules_after(code, tmp_path)


def test_modules_and_functions_stay_small():
    """One job per module (≤ 300 lines), one step per function (≤ 60 lines)."""
    too_long = []
    for path in sorted((REPO / "projects" / "ear").rglob("*.py")):
        source = path.read_text()
        if len(source.splitlines()) > 300:
            too_long.append(f"{path.name}: {len(source.splitlines())} lines")
        for node in ast.walk(ast.parse(source)):
            if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef)):
                length = node.end_lineno - node.lineno + 1
                if length > 60:
                    too_long.append(f"{path.name}:{node.name}: {length} lines")
    assert not too_long
