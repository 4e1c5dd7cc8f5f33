"""``classify``: the built-in image-classification trainable (datasets, models, modes, optimizers,
schedulers and diagnostics by name).

``spec.py`` is its entry point (the spec); ``train.py`` the trial function; ``options.py`` and
``checks.py`` the option tables and config checks, without torch (what ``expgrid validate`` runs);
``data.py``, ``models.py``, ``optim.py`` … the registries ``expgrid list`` shows.
"""
