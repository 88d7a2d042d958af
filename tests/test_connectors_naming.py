"""Folder include/exclude rules and the names of archive entries and bucket keys."""

from __future__ import annotations

from connectors.folderfilter import FolderFilter, split_folder_list
from connectors.naming import message_entry_name, object_key, safe_folder_path, safe_subject


def test_include_selects_a_folder_and_its_subfolders_only():
    flt = FolderFilter(include=["Projekte", "inbox"])
    assert flt.accepts("Projekte") and flt.accepts("Projekte/2024/Q1") and flt.accepts("INBOX")
    assert not flt.accepts("Projekte-alt") and not flt.accepts("Sent")


def test_exclude_wins_and_matching_ignores_case_and_normalisation():
    flt = FolderFilter(include=["Ablage"], exclude=["ablage/ÜBERWEISUNGEN"])
    assert flt.accepts("Ablage/Rechnungen")
    assert not flt.accepts("Ablage/Überweisungen") and not flt.accepts("Ablage/U\u0308berweisungen/2024")
    assert FolderFilter().accepts("anything") and not FolderFilter()
    assert FolderFilter(exclude=["/Spam/"]).accepts("Spam") is False


def test_folder_lists_use_semicolons():
    assert split_folder_list(" INBOX; Projekte/日本語 ;; ") == ["INBOX", "Projekte/日本語"]


def test_entry_names_are_safe_and_unique_by_sequence():
    assert message_entry_name("INBOX", 7, "Re: a/b\\c: *?") == "INBOX/000007_Re_ a_b_c.eml"
    assert message_entry_name("../x", 1, "") == "_../x/000001_no_subject.eml"
    assert safe_folder_path("/a//./b/") == "a/_./b"
    assert len(safe_subject("x" * 500)) == 60
    assert safe_subject(" ... ") == "no_subject"


def test_object_keys():
    assert object_key("backups/2024/", "alice", ".zip") == "backups/2024/alice.zip"
    assert object_key("", "alice", ".report.csv") == "alice.report.csv"
