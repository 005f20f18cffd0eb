"""The seams: every module imports on its own, layers import downwards only, and every config option
composes, builds, and refuses a key it does not take."""

from __future__ import annotations

import pkgutil
import subprocess
import sys
from pathlib import Path

import pytest
from omegaconf import OmegaConf

import mbrec
from mbrec.errors import ConfigError

from conftest import CONF_DIR, compose

SRC = Path(mbrec.__file__).resolve().parent
MODULES = sorted(m.name for m in pkgutil.walk_packages([str(SRC)], "mbrec.") if not m.name.endswith("__main__"))


_IMPORT_EACH = """
import os, sys, traceback
import numpy, scipy.sparse, torch, hydra, omegaconf, pandas  # third-party, shared by the forked children
bad = []
for name in sys.argv[1:]:
    pid = os.fork()
    if pid == 0:  # child: no mbrec module imported yet, so `name` is the first
        try:
            __import__(name)
            os._exit(0)
        except BaseException:
            traceback.print_exc()
            os._exit(1)
    if os.waitpid(pid, 0)[1] != 0:
        bad.append(name)
print(bad)
"""


def test_every_module_imports_first_in_a_fresh_interpreter() -> None:
    """Each module imported first, alone, in a process where no mbrec module was imported before
    (forked from one interpreter that loaded only third-party libraries): import order must not matter."""
    out = subprocess.run([sys.executable, "-c", _IMPORT_EACH, *MODULES], capture_output=True, text=True, timeout=600)
    assert "mbrec" not in out.stdout.strip() and out.stdout.strip() == "[]", out.stdout + out.stderr[-3000:]
    assert len(MODULES) > 30


ROOT = SRC.parents[1]


def _lint_imports(config: Path) -> subprocess.CompletedProcess:
    lint = Path(sys.executable).with_name("lint-imports")
    return subprocess.run([str(lint), "--config", str(config), "--no-cache"], capture_output=True, text=True,
                          cwd=ROOT, timeout=300)


def test_layers_are_kept() -> None:
    """pyproject.toml's import-linter contracts (the layers of docs/architecture.md): no module imports
    from a layer above its own, no cycle between layers, the training layer knows no balancer or report."""
    out = _lint_imports(ROOT / "pyproject.toml")
    assert out.returncode == 0 and "0 broken" in out.stdout, out.stdout[-4000:] + out.stderr[-2000:]


def test_the_layer_check_can_fail(tmp_path: Path) -> None:
    """The same check on a contract the package breaks (balancers below training) reports it."""
    config = tmp_path / "contracts.toml"
    config.write_text('[tool.importlinter]\nroot_packages = ["mbrec"]\n[[tool.importlinter.contracts]]\n'
                      'name = "upside down"\ntype = "layers"\nlayers = ["mbrec.training", "mbrec.balancers"]\n')
    out = _lint_imports(config)
    assert out.returncode != 0 and "BROKEN" in out.stdout.upper(), out.stdout[-2000:]


def _options(group: str) -> list[str]:
    return sorted(p.stem for p in (Path(CONF_DIR) / group).glob("*.yaml"))


def _every_option() -> list[tuple[str, str]]:
    return [(g, o) for g in ("dataset", "backbone", "balancer", "optimizer", "ablation", "scale", "experiment",
                             "hparams_search") for o in _options(g)]


@pytest.mark.parametrize("group, option", _every_option())
def test_every_option_composes_checks_and_refuses_an_extra_key(group: str, option: str, tmp_path: Path) -> None:
    from mbrec.config import check_config

    extra = ["balancer=ckd"] if group == "ablation" else []
    cfg = compose([f"{group}={option}", *extra], tmp_path)
    check_config(cfg)
    if group in ("backbone", "balancer", "optimizer"):
        key = f"+{group}.no_such_key=1"
    elif group == "dataset":
        key = "+dataset.no_such_key=1"
    else:
        key = "+train.no_such_key=1"
    bad = compose([f"{group}={option}", *extra, key], tmp_path)
    with pytest.raises(ConfigError, match="no_such_key.*accepted: "):
        check_config(bad)


@pytest.mark.parametrize("kind", ["backbone", "balancer"])
def test_every_registered_class_builds_from_its_yaml(kind: str, tmp_path: Path, tiny_dataset) -> None:
    from mbrec.backbones import BACKBONES
    from mbrec.balancers import BALANCERS

    registry = BACKBONES if kind == "backbone" else BALANCERS
    shipped = sorted(n for n, cls in registry.items() if cls.__module__.startswith("mbrec."))  # not test toys
    assert shipped == _options(kind)
    for name in shipped:
        node = OmegaConf.to_container(compose([f"{kind}={name}"], tmp_path)[kind], resolve=True)
        built = registry.build(node, tiny_dataset) if kind == "backbone" else registry.build(node)
        assert built.name == name


def test_a_modern_backbone_brings_its_references_training_settings() -> None:
    """MMRec trains these with 2,048 interactions a step at lr 1e-3 (LATTICE and SMORE × 0.96 every 50
    epochs); their YAMLs set train.batch_size, optimizer.lr and train.lr_decay to it (a command-line value
    still wins, whatever the optimizer; the paper's backbones keep the CKD code's 1,024 and 5e-4)."""
    from mbrec import compose as compose_full  # no scale=smoke: the shipped defaults

    for name in ("freedom", "bm3", "lattice", "lgmrec", "smore"):
        cfg = compose_full(f"backbone={name}")
        assert cfg.backbone.name == name
        assert (cfg.train.batch_size, cfg.optimizer.lr) == (2048, 1e-3), name
        assert cfg.train.lr_decay == (0.96 if name in ("lattice", "smore") else 1.0), name
    assert compose_full("backbone=smore", "optimizer=sgd").optimizer.lr == 1e-3
    changed = compose_full("backbone=smore", "optimizer.lr=5e-3", "train.batch_size=512", "train.lr_decay=1")
    assert (changed.optimizer.lr, changed.train.batch_size, changed.train.lr_decay) == (5e-3, 512, 1.0)
    paper = compose_full("backbone=mgcn")
    assert (paper.train.batch_size, paper.optimizer.lr, paper.train.lr_decay) == (1024, 5e-4, 1.0)


def test_a_wrong_type_fails_while_composing(tmp_path: Path) -> None:
    with pytest.raises(Exception, match="embedding_dim"):
        compose(["backbone.embedding_dim=abc"], tmp_path)


def test_unknown_key_error_is_one_line_before_data_loads(tmp_path: Path) -> None:
    """The CLI: one line naming the option, the key and the accepted keys; exit 2; no data read."""
    proc = subprocess.run([sys.executable, "-m", "mbrec", "backbone=egogcn", "+backbone.dropot=0.1",
                           "dataset=baby", f"paths.data_dir={tmp_path / 'nothing'}", "mlflow.enabled=false",
                           f"hydra.run.dir={tmp_path / 'out'}"], capture_output=True, text=True, timeout=300)
    assert proc.returncode == 2
    errors = [line for line in (proc.stdout + proc.stderr).splitlines() if "dropot" in line]
    assert len(errors) == 1 and "backbone=egogcn: unknown key dropot; accepted: name, embedding_dim" in errors[0]
    assert "Traceback" not in proc.stderr


def test_architecture_page_lists_every_module() -> None:
    """docs/architecture.md has one line per module of the package (and names no module that is gone)."""
    import re

    text = (ROOT / "docs/architecture.md").read_text()
    listed = set(re.findall(r"^\| `((?:mbrec|hydra_plugins)/[\w/]+\.py)` \|", text, flags=re.M))
    src = ROOT / "src"
    present = {str(p.relative_to(src)) for p in src.rglob("*.py") if "__pycache__" not in p.parts}
    assert not present - listed, f"modules missing from docs/architecture.md: {sorted(present - listed)}"
    assert not listed - present, f"docs/architecture.md lists modules that do not exist: {sorted(listed - present)}"
