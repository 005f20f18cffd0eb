"""mbrec's Hydra sweeper on current Optuna (``hydra/sweeper=mbrec_optuna``); see docs/sweeps.md.

The package imports nothing of the task it sweeps. A task runs its trial through :mod:`.trial`
(report values for pruning, :class:`~.trial.TrialPruned`); the sweep loop is ``_impl``, the search
space and study identity ``_space``, and every call beyond Optuna's and Hydra's public API ``_compat``.
"""
