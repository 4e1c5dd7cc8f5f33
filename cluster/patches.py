"""Every use of Ray's internals, in one place: the patches that make a section start and end
faster, and two private names expgrid reads.

Each patch is applied by the driver (``cluster.connect.connect`` and
``cluster.tune_section.run_section`` call :func:`apply`), never at import and never in a trial
process, and only

- on the Ray versions it was tested on (:data:`TESTED_RAY`; pyproject pins ``ray`` to them), and
- unless ``EXPGRID_NO_PATCHES`` switches it off: ``1`` (all of them) or a comma-separated list
  of names from :data:`NAMES`, e.g. ``EXPGRID_NO_PATCHES=actor_cache``.

Each patch falls back to Ray's own code where the internals it relies on are not there.
``bench/patches.py`` measures each one against the same workload without it; the key paths
(FIFO, packs, ASHA, resume, data-parallel) are tested with all of them off
(tests/cluster/test_without_patches.py). Three earlier ones were removed because that
benchmark showed no saving: a replacement of ``TuneController._cleanup_trials`` (not waiting at
a section's end for trial actors still starting), ``idle_worker_killing_time_threshold_ms`` of
60 s passed to ``ray.init`` as ``_system_config`` (keeping idle workers longer), and a no-op in
place of ``ray.air._internal.usage.tag_callbacks`` (Tune's callback telemetry, which imports
MLflow into the driver).
"""

from __future__ import annotations

import os
import sys
from collections.abc import Callable
from typing import Any

OFF_ENV = "EXPGRID_NO_PATCHES"
TESTED_RAY = ((2, 60),)  # major, minor of the Ray releases the patches were tested on

# The name of the Ray logger that advises switching token authentication off
# (cluster/connect.py drops that one message). A logger name only: nothing is imported.
TOKEN_SETUP_LOGGER = "ray._private.authentication.authentication_token_setup"
# The logger of ray.init's note that it set no SIGTERM handler in a thread other than the main
# one (cluster/connect.py drops that one message when it starts Ray in the background).
WORKER_LOGGER = "ray._private.worker"


def tested(version: str) -> bool:
    """Whether ``version`` (a ``ray.__version__``) is one the patches were tested on."""
    try:
        major, minor = (int(part) for part in version.split(".")[:2])
    except ValueError:
        return False
    return (major, minor) in TESTED_RAY


def switched_off(name: str, setting: str | None = None) -> bool:
    """Whether ``EXPGRID_NO_PATCHES`` (or ``setting``) turns patch ``name`` off."""
    value = os.environ.get(OFF_ENV, "") if setting is None else setting
    names = {part.strip() for part in value.split(",") if part.strip()}
    return "1" in names or name in names


def enabled(name: str, version: str | None = None) -> bool:
    """Whether patch ``name`` may be applied to the Ray of ``version`` (default: the installed one)."""
    if version is None:
        import ray

        version = ray.__version__
    return tested(version) and not switched_off(name)


# ---------------------------------------------------------------------------------------------
# The patches


def _actor_cache() -> bool:
    """Tune registers its trial actors with a runtime env that sets ``PL_DISABLE_FORK=1`` (and
    passes on AWS credentials and some Train settings where the driver has them). Any runtime
    env makes Ray set it up and start a new worker process for each actor instead of taking one
    of the idle workers it keeps started: in a plain Tune script on 2 CPUs the first trial
    started 7.1-7.7 s after ``fit()`` with it, 2.6-2.8 s without. When
    nothing needs passing on but that variable, register the actors without a runtime env; the
    trial sets it itself (``cluster.trial_side.TRIAL_ENV``), before any user code runs."""
    import ray

    from cluster.trial_side import TRIAL_ENV

    try:
        from ray.tune.execution import class_cache
    except ImportError:
        return False
    cache = getattr(class_cache, "_ActorClassCache", None)
    if cache is None or getattr(class_cache, "DEFAULT_ENV_VARS", None) != TRIAL_ENV:
        return False
    propagated = getattr(class_cache, "ENV_VARS_TO_PROPAGATE", None)
    tune_get = cache.get

    def get(self: Any, trainable_cls: Any) -> Any:
        if propagated is None or any(name in os.environ for name in propagated):
            return tune_get(self, trainable_cls)  # something to pass on: Tune's way
        if trainable_cls not in self._cache:
            self._cache[trainable_cls] = ray.remote(trainable_cls)
        return self._cache[trainable_cls]

    cache.get = get
    return True


# name → the function that applies it to Tune in this process (True: in effect).
PATCHES: dict[str, Callable[[], bool]] = {
    "actor_cache": _actor_cache,
}
NAMES = tuple(PATCHES)  # every name EXPGRID_NO_PATCHES takes
_done: dict[str, bool] = {}  # name → in effect, for each patch this process has considered
_warned = False


def apply() -> list[str]:
    """Apply, once per process, every patch that is enabled; return the names in effect."""
    global _warned
    import ray

    if not tested(ray.__version__) and not _warned:
        _warned = True
        print(f"note: Ray {ray.__version__}: expgrid's patches of Ray are tested on Ray "
              f"{', '.join(f'{a}.{b}' for a, b in TESTED_RAY)} only; running without them", file=sys.stderr)  # fmt: skip
    for name, patch in PATCHES.items():
        if name not in _done:
            _done[name] = enabled(name) and patch()
    return [name for name, applied in _done.items() if applied]


# ---------------------------------------------------------------------------------------------
# Private reads (nothing patched)


def local_cluster_address() -> str | None:
    """HOST:PORT of the Ray running on this machine, as ``ray.init(address="auto")`` finds it;
    None when none runs. Ray has no public function for what ``auto`` means; this is the one
    ray.init calls. Raises LookupError where that function is not there (another Ray
    version): the caller then leaves ``auto`` to ray.init, unprobed."""
    import ray

    if not tested(ray.__version__):
        raise LookupError("not a tested Ray")
    try:
        from ray._private.services import canonicalize_bootstrap_address
    except ImportError:
        raise LookupError("moved in this Ray") from None
    try:
        return canonicalize_bootstrap_address("auto")
    except ConnectionError:
        return None
