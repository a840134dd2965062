"""`docker-daemon:NAME:TAG` / `containers-storage:NAME:TAG`: the image
loaded into a local engine as a docker-archive. Staged as that archive in
the work directory; commit is the load."""

from __future__ import annotations

import os

from ..engines import Engine
from ..fsutil import unlink_quietly
from ..oci.blobs import WorkStore
from ..oci.imageset import ImageSet
from ..oci.reference import EngineRef


class EngineOutput:
    commit_first = True
    single_platform = True          # an engine's image store holds one platform per name

    def __init__(self, ref: EngineRef, engine: Engine):
        self.ref, self.engine = ref, engine
        self._archive: str | None = None
        self._scratch = ""              # the work store: the engine client's TMPDIR lives there
        self._image_id = ""            # what the load brings (the config digest)
        self._before: str | None = None  # what the name pointed at before it
        self.written = 0

    def check(self) -> None:
        self.engine.require()

    def stage(self, images: ImageSet, work: WorkStore) -> None:
        image = images.images[0]
        if any(lay.descriptor.media_type.endswith("+zstd") for lay in image.layers):
            self.engine.require_zstd()
        self._archive = self.engine.archive(image, self.ref.name, work)
        self.written = os.path.getsize(self._archive)
        self._scratch = work.root
        self._image_id = image.config.descriptor.digest
        self._before = self.engine.image_id(self.ref.name)

    def commit(self) -> None:
        if self._archive:
            try:
                self.engine.load(self._archive, self.ref.name, scratch=self._scratch)
            except BaseException:
                # Interrupted or failed, the load may still have landed: put
                # the name back where it was, so "not written" stays true.
                self.engine.restore_name(self.ref.name, self._image_id, self._before)
                raise
            self.abort()

    def abort(self) -> None:
        if self._archive:
            unlink_quietly(self._archive)
            self._archive = None
