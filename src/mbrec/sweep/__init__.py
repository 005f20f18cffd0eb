"""Sweeps and the paper workflow, one module per job:

* ``parent``: one MLflow parent run per sweep (a Hydra callback);
* ``tuned``: a study's best point -> ``conf/tuned/<cell>.yaml``;
* ``budget``: what a study spent (distinct configurations, epochs);
* ``table1``: the Table 1 driver, ``python -m mbrec.sweep table1``.

The per-run parts a sweep relies on (the finished-run index, preset tags, how a trial finds its parent
run) are services of every run: :mod:`mbrec.services`.
"""
