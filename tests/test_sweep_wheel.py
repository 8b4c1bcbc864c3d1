"""conf/ is found from an installed wheel, not only from the editable checkout.

Builds the wheel (the C core compiled, offline: the build needs setuptools from the test
extra), installs it without dependencies into a fresh virtualenv that borrows this
environment's third-party packages through a path file, and runs the config and the command
from a directory outside the checkout.
"""

from __future__ import annotations

import glob
import os
import site
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def test_the_installed_wheel_finds_its_grids(tmp_path):
    wheels = tmp_path / "wheels"
    subprocess.run(
        [sys.executable, "-m", "pip", "wheel", str(ROOT), "--no-deps", "--no-build-isolation",
         "--no-index", "-q", "-w", str(wheels)],
        check=True, capture_output=True, timeout=300,
    )
    (wheel,) = glob.glob(str(wheels / "anonvma_sweep-*.whl"))
    venv = tmp_path / "venv"
    subprocess.run([sys.executable, "-m", "venv", "--without-pip", str(venv)], check=True,
                   timeout=120)
    python = str(venv / "bin" / "python")
    purelib = subprocess.run(
        [python, "-c", "import sysconfig; print(sysconfig.get_paths()['purelib'])"],
        check=True, capture_output=True, text=True,
    ).stdout.strip()
    # this environment's numpy, hydra, ray... but not its editable anonvma-sweep: .pth files
    # in a directory named by a path file are not processed, so its finder stays inactive
    Path(purelib, "borrowed.pth").write_text("\n".join(site.getsitepackages()) + "\n")
    subprocess.run(
        [sys.executable, "-m", "pip", "install", "--no-deps", "--no-index", "-q",
         "--target", purelib, wheel],
        check=True, capture_output=True, timeout=300,
    )
    outside = tmp_path / "elsewhere"
    outside.mkdir()
    env = {k: v for k, v in os.environ.items() if k != "PYTHONPATH"}
    probe = subprocess.run(
        [python, "-c",
         "import sweep, core; from sweep import config; "
         "sw = config.resolve(config.compose(['+grid=aim7'])); "
         "print(sweep.__file__); print(core.__file__); print(len(sw.grid.kernel))"],
        cwd=outside, env=env, check=True, capture_output=True, text=True, timeout=120,
    )
    sweep_file, core_file, kernels = probe.stdout.split()
    assert sweep_file.startswith(purelib) and core_file.startswith(purelib)
    assert int(kernels) >= 3
    no_grid = subprocess.run([python, "-m", "sweep"], cwd=outside, env=env,
                             capture_output=True, text=True, timeout=120)
    assert no_grid.returncode == 2
    grids = "available grids: aim7, aim7-full, chain, contention, heap, mprotect, prefork, smoke"
    assert grids in no_grid.stderr
    assert not (outside / "outputs").exists()
