"""``make ui``: the MLflow UI on mbrec's store, as one light server (``mbrec.services.tracking.ui_command``).

Prints the store and, for each experiment, the address that opens its runs in the saved view
"mbrec: metrics"; then replaces itself with ``mlflow server`` (one worker, job runner off).
``make ui PORT=5001 ARGS="--host 0.0.0.0"``: the port, and any further ``mlflow server`` option.
"""

from __future__ import annotations

import argparse
import os
import sys


def main(argv: list[str] | None = None) -> None:
    from mbrec.defaults import tracking_uri
    from mbrec.services.tracking import ui_addresses, ui_command

    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--port", type=int, default=5000)
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--tracking-uri", default=None, help="default: mbrec's store ($MBREC_HOME/mlflow.db, ...)")
    args, extra = parser.parse_known_args(argv)
    uri = args.tracking_uri or tracking_uri()
    shown = "127.0.0.1" if args.host in ("0.0.0.0", "::") else args.host
    print(f"MLflow UI on {uri} (Ctrl-C stops it):")
    for line in ui_addresses(uri, f"http://{shown}:{args.port}"):
        print(f"  {line}")
    sys.stdout.flush()
    cmd, env = ui_command(uri, args.host, args.port, extra)
    os.execvpe(cmd[0], cmd, env)


if __name__ == "__main__":
    main()
