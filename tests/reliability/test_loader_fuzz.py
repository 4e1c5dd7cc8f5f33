"""Property: a mutated study file is either a valid study or one StudyFileError, never a crash.

The bundled study files (with their data pointed at small fakes, as in
tests/search_spaces/test_study_files.py, so that the unmutated files are valid and mutations get
past the data checks) are mutated the ways a hand edit or a broken transfer does: bytes
flipped, lines deleted or duplicated, a value replaced by a random YAML scalar or container, a
key renamed. ``runner.prepare`` (load, resolve the trainable, check every section against it)
must return or raise StudyFileError (OptionError included) with a one-line message, within
hypothesis's deadline. Deterministic in CI; ``EXPGRID_FUZZ_EXAMPLES=2000`` runs that many random
examples instead.
"""

from __future__ import annotations

import os
import re
from pathlib import Path

import numpy as np
import pytest
import yaml
from hypothesis import HealthCheck, event, given, settings
from hypothesis import strategies as st

from expgrid.errors import StudyFileError
from expgrid.runner import prepare
from expgrid.study import Study

SPACES = Path(__file__).resolve().parents[2] / "search_spaces"
STUDY_FILES = sorted(SPACES.glob("*.yaml"))
EXAMPLES = int(os.environ.get("EXPGRID_FUZZ_EXAMPLES", "150"))


@pytest.fixture(scope="module")
def data_overrides(tmp_path_factory):
    """Per study file, the --set values that point it at fake data (every file then valid)."""
    from trainables.classification.synthetic import (
        write_fake_cifar10,
        write_fake_fashion_mnist,
        write_fake_image_folder,
    )
    from trainables.reid.synthetic import write_fake_veri

    npz = tmp_path_factory.mktemp("npz") / "images.npz"
    rng = np.random.default_rng(0)
    np.savez(npz, images=rng.integers(0, 255, (1600, 28, 28), dtype=np.uint8), labels=rng.integers(0, 10, 1600))
    veri = write_fake_veri(tmp_path_factory.mktemp("veri"), size=(16, 16))
    images = tmp_path_factory.mktemp("images")
    write_fake_cifar10(images, 20, 10)
    write_fake_fashion_mnist(images, 20, 10)
    images = write_fake_image_folder(images, classes=3, per_class=2, size=8)
    out = {}
    for path in STUDY_FILES:
        text = path.read_text()
        overrides = {"dataset.path": str(npz)} if "fashion_mnist" in text else {}
        if "trainable: reid" in text:
            overrides = {"dataset.root": str(veri), "model.pretrained": False}
        if path.stem in ("cifar10", "iml_project4", "dl_tasks"):
            overrides = {"dataset.root": str(images), "model.weights": "random"}
        out[path.name] = overrides
    return out


@pytest.fixture(scope="module")
def scratch(tmp_path_factory):
    return tmp_path_factory.mktemp("fuzz")


def test_the_unmutated_files_are_valid_and_a_known_mutation_is_refused(data_overrides, scratch):
    """The property below could pass vacuously if every file were already refused."""
    for path in STUDY_FILES:
        study, _ = prepare(path, data_overrides[path.name])
        assert isinstance(study, Study)
    broken = scratch / "broken.yaml"
    broken.write_text(STUDY_FILES[0].read_text().replace("metric:", "metric: 1\nmetric:", 1))
    with pytest.raises(StudyFileError, match="expected each key once"):
        prepare(broken, data_overrides[STUDY_FILES[0].name])


# Values a replacement may write: random scalars and containers as YAML writes them, and bits of
# YAML that have crashed loaders (tags, aliases, unclosed brackets, huge and non-finite numbers).
PLAIN = st.one_of(
    st.none(), st.booleans(), st.integers(), st.floats(), st.text(max_size=12),
    st.integers(min_value=-(10**30), max_value=10**30),
)  # fmt: skip
CONTAINERS = st.recursive(PLAIN, lambda inner: st.lists(inner, max_size=4) | st.dictionaries(st.text(max_size=6), inner, max_size=3), max_leaves=8)
NASTY = st.sampled_from([
    ".nan", ".inf", "-.inf", "1.0e+400", "-1.0e+400", "9" * 40, "[", "{", "]", "'", '"', "!!python/object:os.system x",
    "!!binary aGk=", "&a [*a]", "*nowhere", "<<: *nowhere", "? [1]", "[" * 200, "{a: 1, a: 2}", "~", "yes",
    "2024-01-01", "0x1F", "1_000", ":fn", "../../x", "/abs", "..", "é", "\t", "%YAML 1.1", "---", "...",
])  # fmt: skip
YAML_VALUE = st.one_of(CONTAINERS.map(lambda v: yaml.safe_dump(v, default_flow_style=True, width=10**6).strip()
                                      .removesuffix("\n...").removesuffix("...").strip()), NASTY)  # fmt: skip
KEY_LINE = re.compile(r"^(\s*(?:- )?)([^\s:#][^:#]*?):(\s.*)?$")


@st.composite
def mutation(draw, lines: list[str]):
    """One edit of ``lines`` (the file's lines as bytes-decoded text)."""
    kind = draw(st.sampled_from(["flip", "delete", "duplicate", "value", "key"]))
    i = draw(st.integers(0, len(lines) - 1))
    keyed = [j for j, line in enumerate(lines) if KEY_LINE.match(line)]
    if kind == "delete":
        return lines[:i] + lines[i + 1 :]
    if kind == "duplicate":
        return lines[: i + 1] + lines[i:]
    if kind in ("value", "key") and keyed:
        j = draw(st.sampled_from(keyed))
        indent, key, _ = KEY_LINE.match(lines[j]).groups()
        if kind == "value":
            return lines[:j] + [f"{indent}{key}: {draw(YAML_VALUE)}"] + lines[j + 1 :]
        new_key = draw(st.one_of(st.text(min_size=1, max_size=10), st.sampled_from(["metric", "grid", "id", "study", "sample", "zip", "epochs"])))
        return lines[:j] + [f"{indent}{new_key}:{lines[j][len(indent) + len(key) + 1 :]}"] + lines[j + 1 :]
    return lines  # "flip" is done on the bytes, below


@st.composite
def mutated_file(draw):
    path = draw(st.sampled_from(STUDY_FILES))
    lines = path.read_text().split("\n")
    for _ in range(draw(st.integers(1, 3))):
        lines = draw(mutation(lines)) or [""]
    data = bytearray("\n".join(lines).encode("utf-8", "surrogatepass"))
    for _ in range(draw(st.sampled_from([0, 0, 0, 1, 2]))):  # byte flips: may break UTF-8 or YAML anywhere
        at = draw(st.integers(0, max(len(data) - 1, 0)))
        if data:
            data[at] = draw(st.integers(0, 255))
    return path.name, bytes(data)


@settings(max_examples=EXAMPLES, deadline=2000, database=None, derandomize="EXPGRID_FUZZ_EXAMPLES" not in os.environ,
          suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large])  # fmt: skip
@given(case=mutated_file())
def test_a_mutated_study_file_is_a_study_or_one_study_file_error(case, data_overrides, scratch):
    name, data = case
    path = scratch / name
    path.write_bytes(data)
    try:
        study, spec = prepare(path, data_overrides[name])
    except StudyFileError as e:
        message = str(e)
        event(f"refused at {message.removeprefix(f'{path}: ').split(': ')[0][:40]}")  # --hypothesis-show-statistics
        assert "\n" not in message and message, message
        assert message.startswith((f"{path}: ", "--set: ")), message
    else:
        event("valid")
        assert isinstance(study, Study) and study.sections
        assert all(1 <= s.num_trials for s in study.sections)
