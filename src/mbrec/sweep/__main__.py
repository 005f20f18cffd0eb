"""``python -m mbrec.sweep table1 ...``: the Table 1 driver (mbrec.sweep.table1)."""

from mbrec.sweep.table1 import main

if __name__ == "__main__":
    main()
