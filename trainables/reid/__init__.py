"""``reid``: the built-in re-identification trainable (VeRi-776 layout, torchreid-style training).

``spec.py`` is its entry point (the spec); ``train.py`` the trial function; ``options.py`` and
``checks.py`` the option tables and config checks, without torch (what ``expgrid validate`` runs);
``section_log.py`` the coursework's per-section log file. ``synthetic.write_fake_veri`` writes a
small fake dataset in the same layout for tests and smoke runs; ``options.REID_SMOKE`` holds the
config overrides that make a trial tiny.
"""
