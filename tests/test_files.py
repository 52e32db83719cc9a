"""hyperprag.files: a write a kill cannot leave half done."""
import os

import pytest

from hyperprag.files import write_text_atomic


def test_a_write_that_fails_midway_leaves_the_old_file_whole(tmp_path, monkeypatch):
    path = tmp_path / "results.json"
    write_text_atomic(path, "old")

    def killed(src, dst):
        raise KeyboardInterrupt  # the kill lands after the temporary file is written, before the rename

    monkeypatch.setattr(os, "replace", killed)
    with pytest.raises(KeyboardInterrupt):
        write_text_atomic(path, "new ünïcode")
    assert path.read_text() == "old"
    monkeypatch.undo()
    write_text_atomic(path, "new ünïcode")
    assert path.read_text(encoding="utf-8") == "new ünïcode"
    assert [p.name for p in tmp_path.iterdir() if p.name != ".results.json.%d.tmp" % os.getpid()] == ["results.json"]
