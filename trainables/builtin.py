"""Importing this module registers every built-in trainable."""

import trainables.classification  # noqa: F401  (classify)
import trainables.reid  # noqa: F401  (reid: vehicle re-identification, VeRi-776 layout)
import trainables.toy  # noqa: F401  (toy: a fast synthetic objective for tests and benchmarks)
