"""The package's shape: the service never imports the lab (measuring and training tools), not
when Gunicorn loads the app nor when the CLI runs a service command; modules and functions stay
small."""
from __future__ import annotations

import ast
import subprocess
import sys

from helpers import REPO

_LAB_MODULES = "print(sorted(m for m in sys.modules if m.startswith('ear.lab')))"


def _modules_after(code: str) -> str:
    result = subprocess.run([sys.executable, "-c", f"import sys\n{code}\n{_LAB_MODULES}"],
                            capture_output=True, text=True, timeout=120)
    assert result.returncode == 0, result.stderr
    return result.stdout.strip().splitlines()[-1]


def test_importing_the_app_imports_no_lab_module():
    assert _modules_after("import ear.app, ear.wsgi") == "[]"


def test_a_service_command_imports_no_lab_module(tmp_path):
    code = f"from ear.cli import main\nmain(['--data-dir', {str(tmp_path)!r}, 'tracks'])"
    assert _modules_after(code) == "[]"
    # ...and a lab command does (the check above can fail).
    code = "from ear.cli import main\ntry: main(['eval', '--help'])\nexcept SystemExit: pass"
    assert "ear.lab.eval" in _modules_after(code)


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
