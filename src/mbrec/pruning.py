"""mbrec's side of an Optuna sweep: a thin adapter over the ``mbrec_optuna`` sweeper's trial API
(:mod:`hydra_plugins.mbrec_optuna_sweeper.trial`).

Under that sweeper a run is one trial of a study: the training loop calls :func:`report` after every
validation (step = epochs trained) and :class:`TrialPruned` ends the run when the study's pruner says
so (``mbrec.experiment`` marks the MLflow run ``KILLED``, ``mbrec.pruned=true``, and re-raises; the
sweeper's job wrapper records the trial as ``PRUNED``); :func:`record_cost` records the epochs the run
trained, teachers and probes included, which ``hydra.sweeper.max_cost`` caps (Table 1's
``--epochs-per-row``). Outside such a sweep :func:`report` and :func:`record_cost` do nothing and
:func:`current` is None. :func:`open_storage` opens a study's storage as the sweeper does.

The dependency runs one way: mbrec imports the plugin's trial API; the plugin imports nothing of mbrec.
"""

from __future__ import annotations

from hydra_plugins.mbrec_optuna_sweeper.trial import TrialPruned, current, open_storage, record_cost, report

__all__ = ["TrialPruned", "current", "open_storage", "record_cost", "report"]
