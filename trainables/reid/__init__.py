"""``reid``: the built-in re-identification trainable (VeRi-776 layout, torchreid-style training).

``spec.py`` is its entry point (the spec); ``train.py`` the trial function and its checks;
``section_log.py`` the coursework's per-section log file. ``synthetic.write_fake_veri`` writes a
small fake dataset in the same layout for tests and smoke runs; ``train.REID_SMOKE`` holds the
config overrides that make a trial tiny.
"""
