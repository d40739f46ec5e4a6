"""The keep-alive worker's shared connection board (the worker itself runs in test_e2e.py)."""

from __future__ import annotations

import os
import subprocess
import sys

from serving.gunicorn_worker import ConnectionBoard


def test_board_hands_out_slots_and_finds_the_least_busy_sibling():
    board = ConnectionBoard(slots=4)
    a, b, c = board.claim(), board.claim(), board.claim()
    assert len({a, b, c}) == 3
    board.start(a, os.getpid())
    assert board.fewest_elsewhere(a) is None, "slots handed out but not started are not siblings"
    board.start(b, os.getppid())
    board.publish(a, 5)
    board.publish(b, 2)
    assert board.fewest_elsewhere(a) == 2 and board.fewest_elsewhere(b) == 5
    board.release(b)
    assert board.fewest_elsewhere(a) is None
    assert board.claim() == b, "a released slot is reused"
    assert board.claim() is not None and board.claim() is None, "four slots, then none"


def test_board_forgets_a_worker_killed_without_cleaning_up():
    board = ConnectionBoard(slots=2)
    mine, dead = board.claim(), board.claim()
    board.start(mine, os.getpid())
    gone = subprocess.run([sys.executable, "-c", "import os; print(os.getpid())"], capture_output=True, text=True)
    board.start(dead, int(gone.stdout))  # that process has exited: its count must not hold us back
    board.publish(dead, 0)
    board.publish(mine, 3)
    assert board.fewest_elsewhere(mine) is None
    assert board.claim() == dead, "its slot is free again"


def test_board_is_shared_with_forked_children():
    board = ConnectionBoard(slots=2)
    slot = board.claim()
    pid = os.fork()
    if pid == 0:  # the child writes, as a worker does
        board.start(slot, os.getpid())
        board.publish(slot, 7)
        os._exit(0)
    os.waitpid(pid, 0)
    assert board._cells[2 * slot] == pid and board._cells[2 * slot + 1] == 7


def test_a_worker_two_above_the_least_busy_hands_a_connection_over(monkeypatch):
    from types import SimpleNamespace

    import serving.gunicorn_worker as gw

    board = ConnectionBoard(slots=2)
    monkeypatch.setattr(gw, "BOARD", board)
    me, other = board.claim(), board.claim()
    board.start(me, os.getpid())
    board.start(other, os.getppid())
    board.publish(other, 3)
    worker = SimpleNamespace(board_slot=me, _load=lambda: 5)
    assert gw.KeepAliveWorker._crowded(worker), "5 against 3: close one, the client reconnects elsewhere"
    worker._load = lambda: 4
    assert not gw.KeepAliveWorker._crowded(worker), "one above is as even as an odd count gets"
    assert not gw.KeepAliveWorker._crowded(SimpleNamespace(board_slot=None, _load=lambda: 9))
