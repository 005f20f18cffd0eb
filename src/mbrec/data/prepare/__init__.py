"""Prepare real datasets in the MMRec layout that ``mbrec.data.readers`` loads.

``python -m mbrec.data.prepare amazon ...`` builds a folder from McAuley's 2014 Amazon files (reviews,
metadata, image features); ``python -m mbrec.data.prepare lattice ...`` converts a LATTICE/CKD-layout
folder. Input is never executed (metadata lines are parsed as JSON or Python *literals* only), every
bad input is a :class:`mbrec.errors.DataError` naming the file, the line or record and the fix, and
the output folder appears only when complete (written to a temporary folder, then renamed).
"""
