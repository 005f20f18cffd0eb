"""Per-run services, below the pipeline (:mod:`mbrec.experiment`) and above the balancers: the MLflow
run (:mod:`~mbrec.services.tracking`) and its store (:mod:`~mbrec.services.store`), the finished-run
index (:mod:`~mbrec.services.finished`), preset membership (:mod:`~mbrec.services.presets`) and the one
way to train a model inside a run (:mod:`~mbrec.services.fitting`)."""
