"""Refs on the command line and in :meth:`Client.pull`: which version of which model.

========================  =============================================
``fraud-detector``        the model (``latest`` where a version is needed)
``fraud-detector/3``      version 3
``fraud-detector@3``      version 3
``fraud-detector@champion``   the version the alias points at
``fraud-detector@latest``     the newest ready version
``fraud-detector@sha256:…``   the earliest ready version with that digest
========================  =============================================

Model names never contain ``/`` or ``@`` (they are slugs), so the split is unambiguous.
"""

from __future__ import annotations

from dataclasses import dataclass

__all__ = ["Ref", "parse_ref"]


@dataclass(frozen=True)
class Ref:
    """A parsed ref: the model and the version ref (``None`` when only the model is named).

    ``version`` is what the REST API takes in ``…/versions/{ref}``: a number, an alias,
    ``latest`` or ``sha256:<hex>``.
    """

    model: str
    version: str | None = None

    def __str__(self) -> str:
        if self.version is None:
            return self.model
        if self.version.isdigit():
            return f"{self.model}/{self.version}"
        return f"{self.model}@{self.version}"

    @property
    def is_number(self) -> bool:
        """Whether the version is named by its number (the only ref writes accept)."""
        return self.version is not None and self.version.isdigit()


def parse_ref(text: str) -> Ref:
    """Parse ``model``, ``model/N``, ``model@N``, ``model@alias``, ``model@sha256:…``.

    :raises ValueError: for an empty model or version part, or both separators.
    """
    text = text.strip()
    if "/" in text:
        model, _, version = text.partition("/")
        if not version.isdigit():
            raise ValueError(f"{text!r}: after '/' comes a version number (use '@' for "
                             "aliases and digests)")
    elif "@" in text:
        model, _, version = text.partition("@")
    else:
        model, version = text, None
    if not model or version == "" or (version is not None and ("@" in version)):
        raise ValueError(f"{text!r} is not a ref: use MODEL, MODEL/NUMBER, MODEL@ALIAS or "
                         "MODEL@sha256:DIGEST")
    if version is not None and version.isdigit():
        version = str(int(version))
    return Ref(model, version)
