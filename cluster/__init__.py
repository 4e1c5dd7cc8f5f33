"""Everything that talks to Ray: connecting to a cluster, the trial side of a Tune trial, Ray
Train runs, the driver's Tune section, GPU sizing, and the patches of Ray's internals.

May import: Ray (and torch where a trial runs), the core (``expgrid``), and the trial functions
only by reference (``expgrid.trainable_spec.import_ref``). The core imports this package only
inside the functions that call out to Ray. What runs in a trial process (the trial side) never
imports the driver side (connecting, the Tune section): tests/test_imports.py checks it.
"""
