"""Entry point of the MLflow writer process a :class:`expgrid.tracking.Tracker` starts:
``python -m expgrid.mlflow_writer DRIVER_PID REPLY_FD``."""

import sys

from expgrid.tracking import serve

if __name__ == "__main__":
    serve(int(sys.argv[1]), int(sys.argv[2]))
