"""Consumer folders claimed by file lock: two consumers in one state folder never share an outbox."""

from __future__ import annotations

from serving.slots import claim


def test_slots_are_exclusive_and_taken_over_when_released(tmp_path):
    a = claim(tmp_path, 0)
    b = claim(tmp_path, 0)  # the same CONSUMER_INDEX: the next free slot
    assert (a.index, b.index) == (0, 1) and a.folder != b.folder
    assert claim(tmp_path, 5).index == 5  # the hint is where the search starts
    a.release()  # the first consumer died (its lock file closed): its folder is free again
    c = claim(tmp_path, 0)
    assert c.index == 0 and c.folder == tmp_path / "consumer-0"
