"""The data files of a study, checked before anything runs (``expgrid validate`` and ``expgrid run``).

For every distinct data config of the study (the trainable's ``data_key`` of each trial config,
over every section), the trainable's ``check_data`` looks at the files that config names: that
they exist and have the structure its loader expects (the arrays of an .npz, the folders of an
image layout, the header of every image), cheaply and without loading them. Its ConfigError is
placed where the study file sets the value, as planning places the trainable's other errors
(the section's sweep or fixed values, the defaults, or the section and the trial), and raised
as one StudyFileError::

    s.yaml: defaults.dataset.path: expected an .npz with arrays images and labels, got '/d/f.npz (arrays: a, b)'

``expgrid show`` does not call it: it only plans, and works where the data is not.

Sections are planned as ``validate`` plans them, without inherited values: a data option that a
section inherits was swept, and so checked, in the section it comes from. What the check cannot
see (an image whose header is fine but whose data is cut, a file changed after the check) is
named when a trial meets it: ``cannot decode image PATH: reason``.
"""

from __future__ import annotations

from expgrid import planning
from expgrid.errors import ConfigError, StudyFileError
from expgrid.study_types import Study
from expgrid.trainable_spec import TrainableSpec, data_key_of


def check_study_data(study: Study, spec: TrainableSpec) -> int:
    """Raise StudyFileError for the first data config whose files ``spec.check_data`` rejects;
    return how many distinct data configs were checked (0 for a trainable without the hook)."""
    if spec.check_data is None or not spec.takes_data:
        return 0
    checked: set[object] = set()
    for i, section in enumerate(study.sections):
        for plan in planning.plan_section(study, spec, section, {}):
            key = data_key_of(spec, plan.config)
            if key in checked:
                continue
            checked.add(key)
            try:
                spec.check_data(plan.config)
            except ConfigError as e:
                raise StudyFileError(study.path, planning.place_error(e, study, section, f"sections[{i}]", plan.swept)) from None
    return len(checked)
