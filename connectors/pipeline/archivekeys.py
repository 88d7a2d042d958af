"""Which bucket objects an export writes, replaces and deletes: the one place that knows.

An archive's files have *final* keys (``connectors.naming``): ``PREFIX/FILE.zip`` (``.pst``),
or ``PREFIX/FILE.part001.zip``, ``.part002.zip``... when split. The ledger remembers the final
keys of the archive the request's last committed run left in the bucket
(``Ledger.archive_keys``): its *previous* archive. The ZIP and PST engines and the portal's
clean-up all decide from this module:

- **Write keys.** A run writes each file under its final key, unless that key holds a file of
  the previous archive that the run would replace before its own archive is whole; then under
  the *staging* key ``PREFIX/.legacyflo-new.FILE.part002.zip``. No file name may start with
  ``.`` (``file_name_problem``), so a staging key is never another request's key. A file
  completed only when the whole archive is (``single_in_place``: ``FILE.pst``, or ``FILE.zip``
  of an archive that cannot split) is written in place: its completion is the commit.
- **Commit.** Once every file is complete, ``commit_archive`` records in ONE ledger call the new
  final keys and the ``Publication`` still to carry out: the staged files to move into place,
  then the previous archive's keys the new one does not reuse (stale). ``publish`` carries it
  out; it is repeatable, and every run first finishes a publication a killed run left
  (``finish_publication``), before it writes or deletes anything else.
- **Clean-up.** A run that fails or is cancelled before its commit deletes only files it
  completed itself, under the write keys its ledger recorded (``leftover_keys``): never a key
  of the previous archive, never anything found by listing or by a name pattern.
  ``remove_leftovers`` does it, for the pipelines and for the portal giving a request up.

Invariants: until a run commits, every file of the previous archive is where it was, byte for
byte; after the commit, the ledger's ``archive_keys`` names exactly the files that are (or, while
the publication is pending, will be) in the bucket.
"""

from __future__ import annotations

import logging
import re
from collections.abc import Iterable, Sequence
from dataclasses import dataclass

from connectors.naming import clean_file_name, object_key, volume_suffix
from connectors.pipeline.ledger import Move, Publication, UploadState
from connectors.storage.s3.move import copy_object
from connectors.storage.s3.sink import (
    MultipartSink,
    RetryPolicy,
    S3Failure,
    head_object,
    with_retries,
)

log = logging.getLogger(__name__)

STAGING_MARK = ".legacyflo-new."
_VOLUME_SUFFIX = re.compile(r"\.part\d+$", re.IGNORECASE)
_RUN_SUFFIX = re.compile(r"\.r\d+$", re.IGNORECASE)  # run N of an incremental series: FILE.rNNNN
_EXTENSION = re.compile(r"\.(zip|pst)$", re.IGNORECASE)


def file_name_problem(file_name: str) -> str:
    """Why ``file_name`` (without extension) cannot name an archive, or "".

    Refused: a name whose files could be another name's (``alice.part001``'s ``alice.part001.zip``
    is volume 1 of ``alice``; ``alice.r0002.zip`` is run 2 of ``alice``'s incremental series;
    ``alice.zip`` is ``alice`` for a ZIP), and names starting with '.' (staging keys) or holding
    a '/' or '\\'.
    """
    if not file_name:
        return "Enter a file name."
    if file_name.startswith("."):
        return "A file name cannot start with '.'."
    if "/" in file_name or "\\" in file_name:
        return "A file name cannot contain '/' or '\\'."
    if _VOLUME_SUFFIX.search(file_name):
        stem = _VOLUME_SUFFIX.sub("", file_name)
        return (f"A file name cannot end in '.part' and digits: the archive of {file_name} would be "
                f"named like a volume of {stem}'s.")
    if _RUN_SUFFIX.search(file_name):
        stem = _RUN_SUFFIX.sub("", file_name)
        return (f"A file name cannot end in '.r' and digits: the files of {file_name} would be named "
                f"like a later run of {stem}'s incremental series.")
    if _EXTENSION.search(file_name):
        return "A file name cannot end in .zip or .pst (the extension is added for you)."
    return ""


def staging_key(final: str) -> str:
    head, _, name = final.rpartition("/")
    return f"{head}/{STAGING_MARK}{name}" if head else f"{STAGING_MARK}{name}"


def final_key(written: str) -> str:
    """The final key of a file written under ``written`` (itself, or the key it is staged for)."""
    head, slash, name = written.rpartition("/")
    return head + slash + name.removeprefix(STAGING_MARK)


@dataclass(frozen=True)
class ArchiveNames:
    """The keys of one request's archive: ``stem`` is ``PREFIX/FILE``, ``previous`` the final
    keys of its previous archive, ``single_in_place`` see the module docstring."""

    stem: str
    extension: str
    previous: frozenset[str] = frozenset()
    single_in_place: bool = False

    @classmethod
    def of(cls, prefix: str, file_name: str, extension: str, previous: Iterable[str] = (), *,
           can_split: bool) -> ArchiveNames:
        stem = object_key(prefix, clean_file_name(file_name, extension), "")
        return cls(stem, extension, frozenset(previous), single_in_place=extension == "pst" or not can_split)

    def final(self, number: int, *, split: bool) -> str:
        return self.stem + volume_suffix(number, self.extension, split=split)

    def write_key(self, final: str) -> str:
        """Where a file whose final key is ``final`` is written (see the module docstring)."""
        if final not in self.previous or (self.single_in_place and final == self.final(1, split=False)):
            return final
        return staging_key(final)

    def write(self, number: int, *, split: bool) -> str:
        return self.write_key(self.final(number, split=split))


def commit_archive(ledger, client, bucket: str, written: Sequence[tuple[str, int]], *,
                   retry: RetryPolicy) -> tuple[list[str], str]:
    """Every file is complete (``written``: write key and size, in volume order): record the
    commit, then publish. Returns the final keys and a warning naming stale files left."""
    finals = [final_key(key) for key, _size in written]
    publication = Publication(
        moves=[Move(key, final_key(key), size) for key, size in written if key != final_key(key)],
        stale=[key for key in ledger.archive_keys() if key not in finals])
    ledger.commit_archive(finals, publication or None)
    return finals, (publish(ledger, client, bucket, publication, retry=retry) if publication else "")


def finish_publication(ledger, client, bucket: str, *, retry: RetryPolicy) -> str:
    """Carry out the publication a killed or failed run left; a warning if stale files remain."""
    publication = ledger.publication()
    if publication is None:
        return ""
    log.info("finishing the publication of %s", [m.target for m in publication.moves] or publication.stale)
    return publish(ledger, client, bucket, publication, retry=retry)


def publish(ledger, client, bucket: str, publication: Publication, *, retry: RetryPolicy) -> str:
    """Move the staged files into place (a server-side copy, then the staged copy deleted), then
    delete the stale keys. A move that fails raises (the publication stays recorded: the next run
    finishes it); a deletion that fails is recorded as what remains and returned as a warning."""
    for move in publication.moves:
        if with_retries(f"HeadObject {move.source}", lambda m=move: head_object(client, bucket, m.source), retry):
            copy_object(client, bucket, move.source, move.target, move.size, retry=retry)
            with_retries(f"DeleteObject {move.source}",
                         lambda m=move: client.delete_object(Bucket=bucket, Key=m.source), retry)
        # else: moved by an earlier attempt (only a publication deletes a staged file once it is recorded)
    failed: list[str] = []
    error: S3Failure | None = None
    for key in publication.stale:
        try:
            with_retries(f"DeleteObject {key}", lambda k=key: client.delete_object(Bucket=bucket, Key=k), retry)
            log.info("deleted %s, a file of this request's previous archive", key)
        except S3Failure as exc:
            log.warning("could not delete %s, a file of this request's previous archive: %s", key, exc)
            failed.append(key)
            error = exc
    ledger.publication_done(Publication(stale=failed) if failed else None)
    if not failed:
        return ""
    return (f"Files of this request's previous archive that are not part of this one could not be "
            f"deleted ({error}): {', '.join(failed)}; delete them by hand (a retry deletes them too).")


def leftover_keys(state: UploadState, names: ArchiveNames) -> list[str]:
    """The files a run that ends before its commit completed under ``state`` (its ledger's
    upload) and must delete: a partial set of volumes must not look like an archive. A complete
    ZIP archive (only its commit or report missing) keeps everything; a key of the previous
    archive is never returned. Call it only when no publication is pending."""
    last = state.parts[-1] if state.parts else None
    if state.archive_complete and last is not None and last.final and not last.next_volume:
        return []
    keys = [v.key for v in state.volumes]
    if state.archive_complete or (last is not None and last.final and (state.volumes or last.next_volume)):
        keys.append(state.key)  # a file completed, or perhaps completed before a kill
    if state.archive_complete and state.volume == 1:  # perhaps halfway through its rename to .part001
        keys.append(names.write(1, split=True))
    return [key for key in dict.fromkeys(keys) if key not in names.previous]


def remove_leftovers(client, bucket: str, state: UploadState, names: ArchiveNames, *,
                     retry: RetryPolicy) -> None:
    """Abort ``state``'s upload (unless it completed) and delete the files it completed
    (``leftover_keys``). Best effort: a failure is logged, not raised (the run's own failure is
    what its caller reports; the bucket's lifecycle rule is the backstop for uploads)."""
    if not state.archive_complete:
        try:
            MultipartSink(client, bucket, state.key, upload_id=state.upload_id, retry=retry).abort()
        except Exception:  # noqa: BLE001
            log.warning("could not abort the upload of %s", state.key, exc_info=True)
    for key in leftover_keys(state, names):
        try:
            with_retries(f"DeleteObject {key}", lambda k=key: client.delete_object(Bucket=bucket, Key=k), retry)
        except Exception:  # noqa: BLE001
            log.warning("could not delete %s", key, exc_info=True)


def orphan_upload_keys(state: UploadState | None, names: ArchiveNames) -> list[str]:
    """Keys whose multipart upload a run killed between creating and recording it may have left,
    given what its ledger recorded (``state``): with nothing recorded, the first file's; else the
    recorded file's own (sent again), the next file's, and for file 1 its ``.part001`` restart."""
    if state is None:
        return [names.write(1, split=False)]
    keys = [state.key, names.write(state.volume + 1, split=True)]
    if state.volume == 1:
        keys.append(names.write(1, split=True))
    return list(dict.fromkeys(keys))
