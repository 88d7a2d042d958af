"""Pipelines: what joins a source, an archive format and the bucket, on one skeleton.

``run.run_backup`` is the entry point; ``skeleton`` is written once for every format, ``zip_backup``
and ``pst_backup`` are the formats' parts; ``spec``, ``ledger``, ``report``, ``archivekeys``, ``pacing``
and ``prefetch`` are what they share. (Restore, issue 13, will be the second pipeline.)
"""
