"""The README's cheap commands, run exactly as the README writes them (each must still be in it): the
help, a smoke-scale run (which names its results.json, MLflow run and store) and a report on the tiny
store it made. A README edit that breaks one of them fails here."""

from __future__ import annotations

import os
import re
import shlex
import subprocess
import sys
from pathlib import Path

import pytest

README = Path(__file__).resolve().parents[1] / "README.md"

#: in order: the run makes the store the report reads
COMMANDS = [
    "python -m mbrec --help",
    "python -m mbrec --help backbone=mgcn balancer=ckd",
    "python -m mbrec scale=smoke",
    "python -m mbrec.report table1 --runs \"tags.mbrec.scale = 'smoke'\"",
]


def _readme_commands() -> set[str]:
    """Every command line of the README's code blocks, without its trailing comment."""
    text = README.read_text(encoding="utf-8")
    lines = [line for block in re.findall(r"```bash\n(.*?)```", text, flags=re.S) for line in block.splitlines()]
    return {re.sub(r"\s+#.*$", "", line).strip() for line in lines}


def test_every_command_here_is_in_the_readme() -> None:
    missing = [c for c in COMMANDS if c not in _readme_commands()]
    assert not missing, f"README.md no longer has {missing}: update it or this test"


@pytest.mark.slow
def test_the_readmes_cheap_commands_run_as_written(tmp_path: Path) -> None:
    env = {**os.environ, "PYTHONWARNINGS": "ignore", "MBREC_HOME": str(tmp_path)}
    env.pop("MLFLOW_TRACKING_URI", None)
    env.pop("MBREC_CACHE", None)
    outputs = []
    for command in COMMANDS:
        argv = shlex.split(command)
        assert argv[0] == "python"
        proc = subprocess.run([sys.executable, *argv[1:]], cwd=tmp_path, env=env, capture_output=True, text=True,
                              timeout=600)
        assert proc.returncode == 0, f"{command}:\n{proc.stderr[-2000:]}"
        outputs.append(proc.stdout)
    assert "balancer.lambda_kd" in outputs[1]
    # the run names its results, its MLflow run and the store (the one under $MBREC_HOME)
    assert re.search(rf"results: .*results\.json   MLflow run: [0-9a-f]{{32}} in sqlite:///{re.escape(str(tmp_path))}/mlflow\.db",
                     outputs[2]), outputs[2][-800:]
    assert "| synthetic [smoke] | vbpr | base |" in outputs[3]
    assert (tmp_path / "reports" / "table1.md").is_file()
