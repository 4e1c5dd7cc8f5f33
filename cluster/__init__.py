"""Everything that talks to Ray: connecting to a cluster (``connect``, ``attach``, ``local_ray``,
``submit``), the trial side of a Tune trial (``trial_side``, ``train_run``), the driver's Tune
section (``tune_section``), GPU sizing (``gpu``), and every patch of Ray's internals
(``patches``).

May import: Ray (and torch where a trial runs), the core (``expgrid``), and the trial functions
only by reference (``expgrid.trainable_spec.import_ref``). The core imports this package only
inside the functions that call out to Ray. What runs in a trial process (``trial_side``,
``train_run``) never imports the driver side: tests/test_imports.py checks it.
"""

# Before any module of this package imports Ray: a local Ray on 127.0.0.1 only (see local_ray).
from cluster import local_ray as _local_ray  # noqa: F401
