"""Tables from MLflow runs (never hand-copied numbers): ``python -m mbrec.report``."""

from mbrec.report.tables import cell_table, paired_test

__all__ = ["cell_table", "paired_test"]
