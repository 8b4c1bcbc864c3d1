"""CI fails on a skip that is not on the allow-list (tests/conftest.py, ALLOWED_SKIPS)."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]


def _pytest(tmp_path: Path, body: str, strict: str) -> subprocess.CompletedProcess:
    test = tmp_path / "test_some.py"
    test.write_text("import pytest\n\n" + body)
    env = {**os.environ, "SWEEP_STRICT_SKIPS": strict, "PYTEST_DISABLE_PLUGIN_AUTOLOAD": "1"}
    env.pop("CI", None)
    return subprocess.run(
        [sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider", "-p", "tests.conftest",
         "--rootdir", str(tmp_path), str(test)],
        cwd=ROOT, env=env, capture_output=True, text=True, timeout=120,
    )


@pytest.mark.parametrize("strict,code", [("1", 1), ("0", 0)])
def test_a_skip_off_the_list_fails_the_session_in_ci(tmp_path, strict, code):
    proc = _pytest(tmp_path, "def test_a():\n    pytest.skip('the core lacks it')\n\n"
                             "def test_b():\n    pass\n", strict)
    assert proc.returncode == code, proc.stdout[-2000:]
    if strict == "1":
        assert "skips not allowed in CI" in proc.stdout
        assert "test_some.py::test_a: the core lacks it" in proc.stdout


def test_a_failure_keeps_pytests_code_and_xfail_is_no_skip(tmp_path):
    proc = _pytest(tmp_path, "@pytest.mark.xfail(reason='known')\ndef test_x():\n    assert 0\n",
                   "1")
    assert proc.returncode == 0, proc.stdout[-2000:]
    proc = _pytest(tmp_path, "def test_a():\n    pytest.skip('x')\n\n"
                             "def test_b():\n    assert 0\n", "1")
    assert proc.returncode == 1, proc.stdout[-2000:]
    proc = _pytest(tmp_path, "def test_a(:\n", "1")  # a collection error: pytest's own code
    assert proc.returncode == 2, proc.stdout[-2000:]
