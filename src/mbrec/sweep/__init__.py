"""Sweeps and the paper workflow, one module per job:

* ``finished``: the index of finished runs (a re-run sweep replays them instead of training);
* ``presets``: the tags that say which runs a report reads;
* ``parent``: one MLflow parent run per sweep (a Hydra callback) and how trials find it;
* ``tuned``: a study's best point -> ``conf/tuned/<cell>.yaml``;
* ``table1``: the Table 1 driver, ``python -m mbrec.sweep table1``.
"""
