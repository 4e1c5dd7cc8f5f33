"""What one trial does: the built-in trainables ``classify``, ``reid`` and ``toy``.

Each is found through an entry point of the group ``expgrid.trainables`` (pyproject.toml), which
names its spec (``trainables.classification.spec:SPEC``, ``trainables.reid.spec:SPEC``,
``trainables.toy:SPEC``), as a third-party package adds its own (``expgrid.trainable_lookup``).

May import: the core (``expgrid``: its reporter for the trial protocol, errors, config helpers,
registries, the spec type) and the libraries a trial needs (torch, torchvision, numpy). Never the
driver side (``expgrid.runner``, ``expgrid.cli``, tracking) nor ``cluster``. Package ``__init__``
modules import nothing, so loading a spec imports only what the spec module itself needs.
"""
