"""Everything that calls Ray: the driver's side (``connect``, ``tune_section``, ``gpu``,
``patches``, ``attach``, ``local_ray``, ``submit``) and the trial side (``trial_side``,
``train_run``), which trial processes import and which imports nothing of the driver's side.
May import the ``expgrid`` core and ``trainables``; the core imports this package only inside
functions.
"""

# Before any module of this package imports Ray: a local Ray on 127.0.0.1 only (see local_ray).
from cluster import local_ray as _local_ray  # noqa: F401
