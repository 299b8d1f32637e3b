"""One small base for the frozen dataclass configs (SimConfig, MovieConfig, TrainConfig and the
networks' configs): `replace`, and `to_dict` / `from_dict` for JSON (checkpoints and weight
manifests), where tuples travel as lists and come back as tuples."""
from __future__ import annotations

import dataclasses


class Config:
    def replace(self, **changes):
        """A copy with `changes` (the dataclass checks run again)."""
        return dataclasses.replace(self, **changes)

    def to_dict(self) -> dict:
        """The fields as JSON-ready values: tuples as lists."""
        return {f.name: _plain(getattr(self, f.name)) for f in dataclasses.fields(self)}

    @classmethod
    def from_dict(cls, d: dict):
        """The config from `to_dict()`'s output (or a checkpoint's, a manifest's); lists become
        tuples where the field's default is a tuple; unknown keys raise a ValueError naming them."""
        fields = {f.name: f for f in dataclasses.fields(cls)}
        unknown = set(d) - set(fields)
        if unknown:
            raise ValueError(f"unknown {cls.__name__} keys: {sorted(unknown)}")
        return cls(**{k: tuple(v) if isinstance(v, list) and isinstance(fields[k].default, tuple) else v
                      for k, v in d.items()})


def _plain(value):
    if isinstance(value, (tuple, list)):
        return [_plain(v) for v in value]
    return value
