"""The permission names views declare (public: :mod:`modelreg.api` re-exports them).

The security policy (:mod:`modelreg.security.policy`) grants each of them on a model by the
caller's level there; every core view and every plugin view names one of these.
"""

from __future__ import annotations

#: Read a model, its versions, files and aliases.
READ = "read"
#: Create and change models, drafts, files, tags and aliases.
WRITE = "write"
#: Administer a model (rename, protected aliases) or, without a model, the registry.
ADMIN = "admin"
#: The three, weakest first.
PERMISSIONS = (READ, WRITE, ADMIN)
