"""In-memory Huddle data: workspaces, a folder tree, versioned documents, folder change times.

Every folder keeps three change times, one per reading of what moves its `Last-Modified`
(`HuddleOptions.folder_times`): `own_modified` (the folder itself and the list of its
direct children: one added, removed, moved in or out), `children_modified` (that, or any
change to a direct child, such as a document's new version) and `subtree_modified` (the
newest change anywhere beneath it). The server answers with the one its knob names
(`last_modified`). Child lists are kept sorted by `(rank, numeric id)` (folders first),
which is the keyset order of paged folders.

HTTP dates have whole-second resolution. So that no change hides inside a second a client
has already seen, `stamp()` moves a change to the next whole second after the newest time
the server has shown (`observe`), and only then.
"""

from __future__ import annotations

import bisect
import math
import random
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import PurePosixPath

FOLDER_RANK = 0
DOCUMENT_RANK = 1
ItemKey = tuple[int, int]


DEMO_EPOCH = 1704099600.0  # 2024-01-01T09:00:00Z: demo data never depends on the clock


@dataclass
class Folder:
    id: str
    workspace_id: str
    parent_id: str | None
    title: str
    description: str
    created: float
    updated: float
    children: list[ItemKey] = field(default_factory=list)
    deleted: bool = False
    locked: bool = False
    own_modified: float = field(init=False)
    children_modified: float = field(init=False)
    subtree_modified: float = field(init=False)

    def __post_init__(self) -> None:
        self.own_modified = self.children_modified = self.subtree_modified = self.updated

    @property
    def key(self) -> ItemKey:
        return (FOLDER_RANK, int(self.id))


@dataclass
class Version:
    number: int
    version_id: str
    created: float
    size: int


@dataclass
class Document:
    id: str
    folder_id: str
    title: str
    filename: str
    description: str
    mime: str
    data: bytes
    created: float
    updated: float
    versions: list[Version]
    downloadable: bool = True
    has_content: bool = True
    supported: tuple[str, ...] = ("application/pdf",)
    moving: bool = False
    deleted: bool = False

    @property
    def key(self) -> ItemKey:
        return (DOCUMENT_RANK, int(self.id))

    @property
    def version(self) -> int:
        return self.versions[-1].number

    @property
    def version_id(self) -> str:
        return self.versions[-1].version_id

    @property
    def size(self) -> int:
        return len(self.data) if self.has_content else 0

    @property
    def extension(self) -> str:
        return PurePosixPath(self.filename).suffix.removeprefix(".")


@dataclass
class Workspace:
    id: str
    title: str
    root_folder_id: str


@dataclass(frozen=True, slots=True)
class Page:
    keys: list[ItemKey]
    has_prev: bool
    has_next: bool


class HuddleTree:
    """The data behind a Huddle sandbox; mutators raise KeyError for unknown ids."""

    def __init__(self, clock: Callable[[], float]) -> None:
        self._clock = clock
        self._next_id = 1000
        self._observed = 0
        self.workspaces: dict[str, Workspace] = {}
        self.folders: dict[str, Folder] = {}
        self.documents: dict[str, Document] = {}
        self.version_owner: dict[str, str] = {}

    # -- time -----------------------------------------------------------------------------

    def observe(self, ts: float) -> None:
        """Note that a client has been shown the time `ts` (whole seconds)."""
        self._observed = max(self._observed, math.floor(ts))

    def stamp(self) -> float:
        """The time of a change made now, later than any whole second already shown."""
        now = self._clock()
        return float(self._observed + 1) if math.floor(now) <= self._observed else now

    def _new_id(self) -> str:
        self._next_id += 1
        return str(self._next_id)

    # -- structure ------------------------------------------------------------------------

    def add_workspace(self, title: str, *, at: float | None = None) -> str:
        when = self.stamp() if at is None else at
        ws_id = self._new_id()
        root = Folder(self._new_id(), ws_id, None, "Documents", "", when, when)
        self.folders[root.id] = root
        self.workspaces[ws_id] = Workspace(ws_id, title, root.id)
        return ws_id

    def add_folder(
        self, parent_id: str, title: str, *, description: str = "", at: float | None = None
    ) -> str:
        parent = self.folders[parent_id]
        when = self.stamp() if at is None else at
        folder = Folder(
            self._new_id(), parent.workspace_id, parent.id, title, description, when, when
        )
        self.folders[folder.id] = folder
        bisect.insort(parent.children, folder.key)
        self._touch(parent.id, when, listed=True)
        return folder.id

    def add_document(
        self,
        folder_id: str,
        title: str,
        data: bytes,
        *,
        mime: str = "application/octet-stream",
        filename: str | None = None,
        description: str = "",
        downloadable: bool = True,
        has_content: bool = True,
        supported: tuple[str, ...] = ("application/pdf",),
        at: float | None = None,
        touch: bool = True,
    ) -> str:
        folder = self.folders[folder_id]
        when = self.stamp() if at is None else at
        doc_id = self._new_id()
        first = Version(1, self._new_id(), when, len(data) if has_content else 0)
        self.version_owner[first.version_id] = doc_id
        doc = Document(
            id=doc_id,
            folder_id=folder_id,
            title=title,
            filename=filename or title,
            description=description,
            mime=mime,
            data=data,
            created=when,
            updated=when,
            versions=[first],
            downloadable=downloadable,
            has_content=has_content,
            supported=tuple(supported),
        )
        self.documents[doc_id] = doc
        bisect.insort(folder.children, doc.key)
        if touch:
            self._touch(folder_id, when, listed=True)
        return doc_id

    def update_document(self, doc_id: str, data: bytes) -> None:
        doc = self.documents[doc_id]
        when = self.stamp()
        version = Version(doc.version + 1, self._new_id(), when, len(data))
        self.version_owner[version.version_id] = doc_id
        doc.versions.append(version)
        doc.data, doc.has_content, doc.updated = data, True, when
        self._touch(doc.folder_id, when)

    def rename_document(self, doc_id: str, title: str, *, filename: str | None = None) -> None:
        doc = self.documents[doc_id]
        doc.title, doc.filename = title, filename or title
        doc.updated = self.stamp()
        self._touch(doc.folder_id, doc.updated)

    def move_document(self, doc_id: str, folder_id: str) -> None:
        doc = self.documents[doc_id]
        target = self.folders[folder_id]
        when = self.stamp()
        self._unlink(doc.folder_id, doc.key)
        self._touch(doc.folder_id, when, listed=True)
        doc.folder_id, doc.updated = target.id, when
        bisect.insort(target.children, doc.key)
        self._touch(target.id, when, listed=True)

    def delete_folder(self, folder_id: str) -> None:
        folder = self.folders[folder_id]
        if folder.parent_id is None:
            raise ValueError("a workspace root folder cannot be deleted")
        folder.deleted = True
        self._unlink(folder.parent_id, folder.key)
        self._touch(folder.parent_id, self.stamp(), listed=True)

    def delete_document(self, doc_id: str) -> None:
        doc = self.documents[doc_id]
        doc.deleted = True
        self._unlink(doc.folder_id, doc.key)
        self._touch(doc.folder_id, self.stamp(), listed=True)

    def touch_ancestors(self, folder_id: str, when: float) -> None:
        """Public form of the change-time walk for children added in bulk, skipped per item."""
        self._touch(folder_id, when, listed=True)

    def _unlink(self, folder_id: str, key: ItemKey) -> None:
        children = self.folders[folder_id].children
        index = bisect.bisect_left(children, key)
        if index < len(children) and children[index] == key:
            del children[index]

    def _touch(self, folder_id: str, when: float, *, listed: bool = False) -> None:
        """Record a change at `when` to a child of `folder_id` (`listed`: to its child list)."""
        folder = self.folders[folder_id]
        if listed:
            folder.own_modified = max(folder.own_modified, when)
        folder.children_modified = max(folder.children_modified, when)
        current: Folder | None = folder
        while current is not None:
            current.subtree_modified = max(current.subtree_modified, when)
            current = self.folders[current.parent_id] if current.parent_id else None

    def last_modified(self, folder: Folder, reading: str) -> float:
        """The folder's `Last-Modified` under one of the `FOLDER_TIMES` readings."""
        if reading == "own":
            return folder.own_modified
        if reading == "children":
            return folder.children_modified
        return folder.subtree_modified

    # -- reading --------------------------------------------------------------------------

    def folder_gone(self, folder: Folder) -> bool:
        """A folder is gone when it or any ancestor was deleted."""
        current: Folder | None = folder
        while current is not None:
            if current.deleted:
                return True
            current = self.folders[current.parent_id] if current.parent_id else None
        return False

    def document_gone(self, doc: Document) -> bool:
        return doc.deleted or self.folder_gone(self.folders[doc.folder_id])

    def item(self, key: ItemKey) -> Folder | Document:
        rank, number = key
        return self.folders[str(number)] if rank == FOLDER_RANK else self.documents[str(number)]

    def page_after(self, folder: Folder, after: ItemKey | None, size: int) -> Page:
        children = folder.children
        start = 0 if after is None else bisect.bisect_right(children, after)
        end = start + size
        return Page(children[start:end], start > 0, end < len(children))

    def page_before(self, folder: Folder, before: ItemKey, size: int) -> Page:
        children = folder.children
        end = bisect.bisect_left(children, before)
        start = max(0, end - size)
        return Page(children[start:end], start > 0, end < len(children))


# -- generated data ---------------------------------------------------------------------------

_KINDS = (
    ("txt", "text/plain"),
    ("pdf", "application/pdf"),
    ("docx", "application/vnd.openxmlformats-officedocument.wordprocessingml.document"),
    ("png", "image/png"),
    ("csv", "text/csv"),
)
_WORDS = ("site", "plan", "survey", "budget", "minutes", "drawing", "report", "schedule")
_DEMO_FOLDERS = (
    ("Projects", None),
    ("Alpha", "Projects"),
    ("Beta", "Projects"),
    ("Archive", None),
    ("2023", "Archive"),
)


def populate_demo(tree: HuddleTree, n: int, seed: int) -> str:
    """A workspace with a small nested tree of `n` documents; the same for the same seed."""
    rng = random.Random(seed)
    ws_id = tree.add_workspace("Demo workspace", at=DEMO_EPOCH)
    root = tree.workspaces[ws_id].root_folder_id
    by_title: dict[str | None, str] = {None: root}
    for index, (title, parent) in enumerate(_DEMO_FOLDERS):
        at = DEMO_EPOCH + 60 * (index + 1)
        by_title[title] = tree.add_folder(by_title[parent], title, at=at)
    targets = list(by_title.values())
    for i in range(n):
        ext, mime = rng.choice(_KINDS)
        title = f"{rng.choice(_WORDS)}-{i:03d}.{ext}"
        data = _demo_bytes(title, mime, rng.randint(64, 4096), rng)
        supported = () if mime == "application/pdf" else ("application/pdf",)
        at = DEMO_EPOCH + 3600 * (i + 1)
        tree.add_document(rng.choice(targets), title, data, mime=mime, supported=supported, at=at)
    return ws_id


def populate_bulk(
    tree: HuddleTree, folder_id: str, count: int, *, prefix: str = "bulk"
) -> list[str]:
    """`count` small text documents in one folder, cheap enough for 100,000 of them.

    They all share one change time, taken once from the clock, so a client that has seen
    the folder before sees it change.
    """
    when = tree.stamp()
    ids = [
        tree.add_document(
            folder_id,
            f"{prefix}-{i:06d}.txt",
            f"{prefix} document {i}\n".encode(),
            mime="text/plain",
            at=when,
            touch=False,
        )
        for i in range(count)
    ]
    if ids:
        tree.touch_ancestors(folder_id, when)
    return ids


def _demo_bytes(title: str, mime: str, size: int, rng: random.Random) -> bytes:
    if mime.startswith("text/"):
        line = f"{title}: sandbox demo content\n".encode()
        return (line * (size // len(line) + 1))[:size]
    return rng.randbytes(size)
