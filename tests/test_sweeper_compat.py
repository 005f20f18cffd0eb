"""The mbrec_optuna sweeper plugin stands on its own: it imports nothing of mbrec (mbrec talks to it
through its trial API), it reaches into Optuna and Hydra only through its ``_compat`` shim (checked
here against the installed versions, on a real in-memory study), and its study fingerprint leaves out
the same keys a run does (mbrec.defaults.NON_SEMANTIC_KEYS)."""

from __future__ import annotations

import ast
import os
import subprocess
import sys
from importlib import metadata
from pathlib import Path

import optuna
import pytest
from hydra.core.override_parser.overrides_parser import OverridesParser
from hydra.core.utils import JobReturn, JobStatus
from omegaconf import OmegaConf
from optuna.distributions import CategoricalDistribution, FloatDistribution, IntDistribution
from optuna.trial import TrialState

from hydra_plugins.mbrec_optuna_sweeper import _compat, _space, _trial
from hydra_plugins.mbrec_optuna_sweeper import trial as sweep_trial

from conftest import CONF_DIR

REPO = Path(__file__).resolve().parents[1]
PLUGINS = REPO / "src" / "hydra_plugins"
SOURCES = sorted(PLUGINS.rglob("*.py"))


# ---------------------------------------------------------------- dependency direction
def _imported_modules(tree: ast.AST) -> list[str]:
    names = []
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            names += [a.name for a in node.names]
        elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
            names.append(node.module)
        elif isinstance(node, ast.Call) and getattr(node.func, "attr", getattr(node.func, "id", None)) in (
                "import_module", "__import__") and node.args and isinstance(node.args[0], ast.Constant):
            names.append(str(node.args[0].value))
    return names


def test_the_plugin_imports_nothing_of_mbrec() -> None:
    assert SOURCES, PLUGINS
    offenders = [f"{path.relative_to(REPO)}: import {name}" for path in SOURCES
                 for name in _imported_modules(ast.parse(path.read_text(), str(path)))
                 if name == "mbrec" or name.startswith("mbrec.")]
    assert not offenders, "the sweeper plugin must not depend on mbrec:\n" + "\n".join(offenders)


def test_the_plugin_runs_without_mbrec_loaded() -> None:
    """Importing every plugin module (and the trial API's names) loads no mbrec module."""
    modules = [".".join(p.relative_to(PLUGINS.parent).with_suffix("").parts).removesuffix(".__init__") for p in SOURCES]
    code = ("import importlib, sys\n"
            f"for m in {modules!r}: importlib.import_module(m)\n"
            "from hydra_plugins.mbrec_optuna_sweeper.trial import report, TrialPruned, trial_scope\n"
            "print(sorted(m for m in sys.modules if m == 'mbrec' or m.startswith('mbrec.')))\n")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120,
                         env={**os.environ, "PYTHONWARNINGS": "ignore"})
    assert out.returncode == 0, out.stderr[-2000:]
    assert out.stdout.strip() == "[]"


def test_the_trial_api_is_the_protocol_module() -> None:
    """``trial`` (public, re-executed by Hydra's plugin scan) holds no state: its names are ``_trial``'s."""
    assert sorted(sweep_trial.__all__) == sorted(_trial.__all__)
    for name in sweep_trial.__all__:
        assert getattr(sweep_trial, name) is getattr(_trial, name)
    with pytest.raises(AttributeError):
        sweep_trial.no_such_name  # noqa: B018


# ---------------------------------------------------------------- private Optuna/Hydra calls only in _compat
def _private_accesses(path: Path) -> list[str]:
    """``obj._name`` (not ``self._``/``cls._``, not dunders) and ``getattr(obj, "_name")`` in ``path``."""
    found = []
    for node in ast.walk(ast.parse(path.read_text(), str(path))):
        if isinstance(node, ast.Attribute) and node.attr.startswith("_") and not node.attr.startswith("__"):
            if not (isinstance(node.value, ast.Name) and node.value.id in ("self", "cls")):
                found.append(f"{path.name}:{node.lineno}: .{node.attr}")
        elif (isinstance(node, ast.Call) and isinstance(node.func, ast.Name)
              and node.func.id in ("getattr", "setattr", "hasattr") and len(node.args) >= 2
              and isinstance(node.args[1], ast.Constant) and str(node.args[1].value).startswith("_")):
            found.append(f"{path.name}:{node.lineno}: {node.func.id}(..., {node.args[1].value!r})")
    return found


def test_private_optuna_and_hydra_calls_go_through_the_shim() -> None:
    outside = [hit for path in SOURCES if path.name != "_compat.py" for hit in _private_accesses(path)]
    assert not outside, "use a public API or a named function in _compat.py:\n" + "\n".join(outside)
    assert _private_accesses(PLUGINS / "mbrec_optuna_sweeper" / "_compat.py")  # the check does see them


def _release(version: str) -> tuple[int, ...]:
    return tuple(int(p) for p in version.split("+")[0].split(".")[:3] if p.isdigit())


@pytest.mark.parametrize("dist", sorted(_compat.CHECKED))
def test_installed_versions_are_the_checked_ones(dist: str) -> None:
    low, high = _compat.CHECKED[dist]
    have = metadata.version(dist)
    assert _release(low) <= _release(have) < _release(high), (
        f"{dist} {have} is outside the range src/hydra_plugins/mbrec_optuna_sweeper/_compat.py was checked "
        f"against (>={low},<{high}): re-check every function there (this file exercises them), then widen CHECKED")
    assert _compat.unchecked_versions() == []


def test_unchecked_versions_are_reported(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setitem(_compat.CHECKED, "optuna", ("0.1", "0.2"))
    (problem,) = _compat.unchecked_versions()
    assert problem.startswith(f"optuna {metadata.version('optuna')} (checked: >=0.1,<0.2)")


# ---------------------------------------------------------------- every shim function on a real study
SPACE = {"lr": CategoricalDistribution((1e-3, 5e-3)), "dropout": FloatDistribution(0.0, 0.8, step=0.1),
         "layers": IntDistribution(1, 3)}


def test_shim_functions_on_an_in_memory_study() -> None:
    storage = optuna.storages.InMemoryStorage()
    study = optuna.create_study(study_name="compat", storage=storage, direction="maximize",
                                pruner=optuna.pruners.ThresholdPruner(lower=0.5))
    other = optuna.create_study(study_name="other", storage=storage)
    other.ask()  # ids of the second study's trials differ from their numbers
    sid = _compat.study_id(storage, "compat")
    assert storage.get_study_name_from_id(sid) == "compat" and _compat.study_id(storage, "other") != sid

    first, second = study.ask(fixed_distributions=SPACE), study.ask(fixed_distributions=SPACE)
    for asked in (first, second):
        tid = _compat.trial_id(storage, sid, asked.number)
        assert storage.get_trial(tid).number == asked.number and storage.get_trial(tid).params == asked.params
    assert _compat.trial_id(storage, _compat.study_id(storage, "other"), 0) != _compat.trial_id(storage, sid, 0)

    # a second handle on a RUNNING trial, as the job holds it: it reports, and the study's pruner judges
    job = _compat.running_trial(study, _compat.trial_id(storage, sid, second.number))
    assert job.number == second.number and job.params == second.params
    job.report(0.9, 1)
    assert not job.should_prune()
    job.report(0.1, 2)
    assert job.should_prune()
    assert storage.get_trial(_compat.trial_id(storage, sid, second.number)).intermediate_values == {1: 0.9, 2: 0.1}

    assert [t.number for t in _compat.trials(study, (TrialState.RUNNING,))] == [0, 1]
    study.tell(first, 0.7)
    study.tell(second.number, state=TrialState.FAIL)
    assert [t.number for t in _compat.trials(study, (TrialState.COMPLETE,))] == [0]
    assert [t.number for t in _compat.trials(study)] == [0, 1]
    assert isinstance(_compat.trials(study)[0], optuna.trial.FrozenTrial)

    # a failed trial is in the space it was drawn from, and its retry (enqueued) again
    (failed,) = _compat.trials(study, (TrialState.FAIL,))
    assert _compat.sampled_from(failed, SPACE)
    assert not _compat.sampled_from(failed, {**SPACE, "lr": CategoricalDistribution((1e-3, 1e-2))})
    assert not _compat.sampled_from(failed, {k: d for k, d in SPACE.items() if k != "layers"})
    study.enqueue_trial(failed.params)
    retry = study.ask(fixed_distributions=SPACE)
    assert retry.params == failed.params
    assert _compat.sampled_from(storage.get_trial(_compat.trial_id(storage, sid, retry.number)), SPACE)


@pytest.mark.parametrize("value", ["plain", "two words", "a,b", "x=y", "(paren)", "${oc.env:HOME}",
                                   1e-05, 0.1, 3, -2, True, False])
def test_render_value_parses_back(value) -> None:
    (override,) = OverridesParser.create().parse_overrides([f"key={_compat.render_value(value)}"])
    assert override.value() == value and type(override.value()) is type(value)
    assert _space.render(value) == _compat.render_value(value)


def test_job_error_reads_a_failed_job_quietly(capsys: pytest.CaptureFixture) -> None:
    failed, done = JobReturn(), JobReturn()
    failed.status, failed.return_value = JobStatus.FAILED, sweep_trial.TrialPruned("stop")
    done.status, done.return_value = JobStatus.COMPLETED, 0.5
    assert isinstance(_compat.job_error(failed), sweep_trial.TrialPruned) and _compat.job_error(done) is None
    assert capsys.readouterr().err == ""


# ---------------------------------------------------------------- the fingerprint ignores what a run ignores
def _composed(*overrides: str):
    from hydra import compose, initialize_config_dir

    with initialize_config_dir(version_base="1.3", config_dir=CONF_DIR):
        return compose("config", ["hparams_search=paper_grid", *overrides], return_hydra_config=True)


def _fingerprint(cfg, sweeper=None) -> str:
    """The study fingerprint the sweeper computes for job config ``cfg`` (settings of ``cfg``'s sweeper)."""
    sweeper = cfg.hydra.sweeper if sweeper is None else sweeper
    space, _, _ = _space.parse_space([f"{k}={v}" for k, v in sweeper.params.items()], grid=True)
    settings = _space.fixed_settings(cfg, set(space), list(sweeper.fingerprint_ignore))
    return _space.fingerprint(settings, space, sweeper.direction)


def test_fingerprint_ignore_is_mbrecs_non_semantic_keys() -> None:
    from mbrec.defaults import NON_SEMANTIC_KEYS, NON_SEMANTIC_TRAIN_KEYS

    for preset in ("paper_grid", "paper_grid_dropout", "ckd_grid", "tpe", "ckd_tpe"):
        ignore = list(_composed(f"hparams_search={preset}").hydra.sweeper.fingerprint_ignore)
        assert ignore == [*NON_SEMANTIC_KEYS, *(f"train.{k}" for k in NON_SEMANTIC_TRAIN_KEYS)], preset


def test_fingerprint_ignores_threads_and_every_non_semantic_key() -> None:
    from mbrec.defaults import NON_SEMANTIC_KEYS, NON_SEMANTIC_TRAIN_KEYS

    base = _composed("threads=auto")
    assert _fingerprint(_composed("threads=2")) == _fingerprint(base)
    assert _fingerprint(_composed("device=cpu", "skip_finished=true", "mlflow.enabled=false",
                                  "paths.data_dir=elsewhere", "train.resume=false",
                                  "train.eval_batch_size=7")) == _fingerprint(base)
    searched = set(base.hydra.sweeper.params)
    keys = [*NON_SEMANTIC_KEYS, *(f"train.{k}" for k in NON_SEMANTIC_TRAIN_KEYS)]
    plain = OmegaConf.create(OmegaConf.to_container(base))  # untyped: any key may take any value
    assert _fingerprint(plain) == _fingerprint(base)
    for key in (k for k in keys if k not in searched):
        changed = plain.copy()
        OmegaConf.update(changed, key, "changed-by-the-test", merge=False)
        assert OmegaConf.select(changed, key) == "changed-by-the-test"
        assert _fingerprint(changed, base.hydra.sweeper) == _fingerprint(base), key
    # what does change a run changes the study
    assert _fingerprint(_composed("train.max_epochs=2")) != _fingerprint(base)
    assert _fingerprint(_composed("seed=7")) != _fingerprint(base)
