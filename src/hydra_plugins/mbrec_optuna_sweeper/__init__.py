"""mbrec's Hydra sweeper on current Optuna (``hydra/sweeper=mbrec_optuna``); see docs/sweeps.md."""
