"""``GET /bundles/…``: Starlette's `StaticFiles` (ETag, ``If-None-Match``, ``HEAD``, ranges)
deciding *which* file by `certpin.dynamic.files.bundle_file`, the rule ``certpin bundle serve``
uses: only bundle files, never a dotfile (``.git/config``, ``.lock``), a directory, or a file
reached through a symlink that leaves the directory or lands on a dotfile.
"""

from __future__ import annotations

import os

from starlette.staticfiles import StaticFiles
from starlette.types import Scope

from certpin.dynamic.files import bundle_file

__all__ = ["BundleFiles"]


class BundleFiles(StaticFiles):
    """`StaticFiles` for one bundle directory, answering 404 for anything but a bundle file."""

    def get_path(self, scope: Scope) -> str:
        # The path as requested (decoded), not StaticFiles' normalised one: "sub/../.lock" and
        # "a//b" must be judged as sent, so that normalising cannot turn them into a served file.
        path = str(scope["path"])
        root = str(scope.get("root_path", ""))
        return path[len(root) :] if root and path.startswith(root) else path

    def lookup_path(self, path: str) -> tuple[str, os.stat_result | None]:
        assert self.directory is not None  # the collector always gives one
        found = bundle_file(self.directory, path)
        if found is None:
            return "", None
        try:
            return str(found), found.stat()
        except OSError:  # gone since it was found
            return "", None
