"""The registry of data sources, like the feature registry: one registered class per source.

A source says how a `DataConfig` that names it is checked, labelled,
fingerprinted (the files it reads, by role) and read into the common schema
(`schema.RawDataset`). Adding a source is one module with one `@register`
class; `encoded.py` reads every source through this interface.
"""

from __future__ import annotations

from recsys_ablate.errors import UserInputError

SOURCES: dict[str, "DataSource"] = {}


class DataSource:
    """One way data comes in. Subclasses set `names` and implement `read`.

    Attributes:
      names: The `--dataset` values that select this source.
    """

    names: tuple[str, ...] = ()
    reads_data_dir = False  # whether `--data_dir` names its data (GroupLens folders)

    def resolve(self, spec):
        """The spec with implied fields filled in (default: unchanged)."""
        return spec

    def check(self, spec) -> None:
        """Raises UserInputError when the spec lacks what this source needs."""

    def label(self, spec) -> str:
        """Short readable name of the data, for folder names and reports."""
        return spec.dataset.replace("/", "-")

    def files(self, spec) -> dict[str, str]:
        """The files read, by role (hashed into the data's fingerprint); {} when `identity` names the data."""
        return {}

    def describe(self, spec) -> str | None:
        """Where the data is read from, for reports (from the spec: a cache made from the same bytes
        elsewhere must not name the other place); None when `read`'s description never names a path."""
        return None

    def identity(self, spec) -> str | None:
        """A name that stands for the data where there are no files to hash (tfds), else None."""
        return None

    def fingerprint_settings(self, spec) -> dict:
        """Source settings that change the encoded data besides the files (CSV column names)."""
        return {}

    def movie_lengths_csv(self, spec) -> str | None:
        """A runtimes CSV that comes with the data (the demo's), or None."""
        return None

    def read(self, spec):
        """The data in the common schema (`RawDataset`)."""
        raise NotImplementedError


def register(cls):
    """Class decorator: registers a `DataSource` under each of its names."""
    source = cls()
    for name in cls.names:
        SOURCES[name] = source
    return cls


def source_for(spec) -> DataSource:
    """The registered source of `spec.dataset`.

    Raises:
      UserInputError: an unknown name, listing the known ones.
    """
    if spec.dataset not in SOURCES:
        known = ", ".join(sorted(SOURCES))
        raise UserInputError(f"--dataset {spec.dataset}: unknown; expected one of {known}")
    return SOURCES[spec.dataset]
