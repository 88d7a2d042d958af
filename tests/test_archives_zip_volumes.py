"""VolumeBudget: a volume it lets through is never bigger than the limit, and it is filled."""

from __future__ import annotations

import io
import random
import zipfile

from connectors.archives.zip import writer as zipwriter
from connectors.archives.zip.volumes import VolumeBudget, _labels_bytes, labels_row_bound
from connectors.pipeline.ledger import MESSAGE, EntryRecord
from connectors.pipeline.report import labels_manifest
from tests.test_archives_zip_writer import ZipOut


def test_central_header_size_matches_the_header_it_describes():
    big = 5 * 1024**3
    for entry in [
        zipwriter.ZipEntry("INBOX/000001_a.eml", 0, 1, 10, 20, 8, 0, 0),
        zipwriter.ZipEntry("Projekte/日本語/000002_Grüße.eml", 7, 1, 10, 20, 8, 0, 0),
        zipwriter.ZipEntry("huge.eml", 0, 1, big, big, 0, 0, 0),
        zipwriter.ZipEntry("far.eml", big, 1, 10, 20, 8, 0, 0),
        zipwriter.ZipEntry("all.eml", big, 1, big, big, 0, 0, 0),
        zipwriter.directory_entry("Leer/", big),
    ]:
        assert entry.central_header_size == len(zipwriter.central_header(entry)), entry.name


def _write_volumes(sizes: list[int], limit: int) -> list[bytes]:
    """Entries of these payload sizes, split the way the export engine splits them."""
    rng = random.Random(7)
    volumes, out = [], io.BytesIO()
    writer, budget = ZipOut(out, level=0), VolumeBudget(limit)
    for n, size in enumerate(sizes):
        data = rng.randbytes(size)
        name = f"INBOX/{n:06d}_message {n}.eml"
        entry, _payload = zipwriter.file_entry(name, writer.offset, data, None, level=0)
        if budget.must_split_before(entry):
            writer.close()
            volumes.append(out.getvalue())
            out = io.BytesIO()
            writer, budget = ZipOut(out, level=0), VolumeBudget(limit)
            entry, _payload = zipwriter.file_entry(name, 0, data, None, level=0)
        writer.add_file(name, data)
        budget.add(entry, message=True)
    writer.close()
    volumes.append(out.getvalue())
    return volumes


def test_volumes_stay_within_the_limit_and_are_filled():
    rng = random.Random(1)
    sizes = [rng.randint(100, 40_000) for _ in range(400)]
    limit = 500_000
    volumes = _write_volumes(sizes, limit)
    assert len(volumes) >= 10
    for body in volumes:
        assert len(body) <= limit
        with zipfile.ZipFile(io.BytesIO(body)) as archive:
            assert archive.testzip() is None
    for body in volumes[:-1]:  # closed only when the next message did not fit
        assert len(body) > limit - 40_000 - 200
    assert sum(len(zipfile.ZipFile(io.BytesIO(b)).namelist()) for b in volumes) == len(sizes)


def test_an_entry_bigger_than_the_limit_gets_a_volume_of_its_own():
    volumes = _write_volumes([1000, 1000, 300_000, 1000], limit=100_000)
    counts = [len(zipfile.ZipFile(io.BytesIO(b)).namelist()) for b in volumes]
    assert counts == [2, 1, 1]
    assert len(volumes[1]) > 100_000 and all(len(volumes[i]) <= 100_000 for i in (0, 2))


def test_the_labels_bound_covers_labels_csv_however_it_is_quoted():
    records, bound = [], 0
    rng = random.Random(3)
    for n in range(300):
        labels = tuple(rng.choice(['"quoted"', "a,b", "Ünïcødé \\Inbox", "x" * 50, '""']) for _ in range(3))
        record = EntryRecord(MESSAGE, 'Fo"lder, 1', f"1:{n}", name=f'Fo"lder, 1/{n:06d}_"x".eml', labels=labels)
        records.append(record)
        bound += labels_row_bound(record.name, record.folder, record.source_id, record.labels)
    csv_bytes = io.BytesIO()
    labels_manifest(records, csv_bytes)
    raw = csv_bytes.getvalue()
    packed = zipwriter.deflate(raw)
    entry = zipwriter.ZipEntry("labels.part001.csv", 0, 0, len(packed), len(raw), zipwriter.DEFLATED, 0, 0)
    actual = entry.local_header_size + len(packed) + entry.central_header_size
    assert actual <= _labels_bytes(bound)
    assert len(raw) <= bound  # the rows' bound alone covers the text, incompressible or not
