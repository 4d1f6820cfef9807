"""PromptQueue ordering and SQLite persistence, without a server."""

from pathlib import Path

from comfyserve.queue import PromptQueue, QueueItem
from comfyserve.store import Store, StoreBusy


class RecordingHub:
    def __init__(self):
        self.sent = []

    def send(self, event, data, sid=None):
        self.sent.append((event, data, sid))


def make_queue(path: Path) -> PromptQueue:
    return PromptQueue(Store(path / "q.sqlite3"), RecordingHub())


def restart(queue: PromptQueue, max_history: int = 10000) -> PromptQueue:
    """The process "dies" (its lock on the file goes with it) and a new one opens the file."""
    queue.store.close()
    return PromptQueue(Store(queue.store.path), RecordingHub(), max_history=max_history)


def item(queue: PromptQueue, prompt_id: str, number=None) -> QueueItem:
    number = queue.next_number() if number is None else number
    return QueueItem(number, prompt_id, {"1": {"class_type": "X", "inputs": {}}}, {"create_time": 1}, ["1"])


def test_lowest_number_runs_first_and_status_counts_running(tmp_path):
    queue = make_queue(tmp_path)
    for pid in ("a", "b"):
        queue.put(item(queue, pid))
    queue.put(item(queue, "front", number=-5))
    assert queue.remaining() == 3
    first = queue.take(timeout=0)
    assert first.prompt_id == "front"
    assert queue.remaining() == 3  # the running prompt still counts
    assert [i.prompt_id for i in queue.snapshot()[0]] == ["front"]
    assert queue.hub.sent[-1] == ("status", {"status": {"exec_info": {"queue_remaining": 3}}}, None)


def test_delete_and_clear_only_touch_pending(tmp_path):
    queue = make_queue(tmp_path)
    for pid in ("a", "b", "c"):
        queue.put(item(queue, pid))
    running = queue.take(timeout=0)
    queue.delete_pending([running.prompt_id, "b", "unknown"])
    assert [i.prompt_id for i in queue.snapshot()[1]] == ["c"]
    queue.clear_pending()
    assert queue.snapshot() == ([running], [])


def test_pending_prompts_survive_a_restart(tmp_path):
    queue = make_queue(tmp_path)
    for pid in ("a", "b"):
        queue.put(item(queue, pid))
    restored = restart(queue)
    assert [i.prompt_id for i in restored.snapshot()[1]] == ["a", "b"]
    # The number counter carries on after the restart.
    assert restored.next_number() == 2


def test_running_prompt_is_requeued_once_then_failed(tmp_path):
    queue = make_queue(tmp_path)
    queue.put(item(queue, "a"))
    queue.take(timeout=0)  # started; then the process "dies"

    second = restart(queue)
    assert [i.prompt_id for i in second.snapshot()[1]] == ["a"]
    again = second.take(timeout=0)  # started a second time; dies again
    assert again.attempts == 2

    third = restart(second)
    assert third.snapshot() == ([], [])
    entry = third.history["a"].entry
    assert entry["status"]["status_str"] == "error"
    assert entry["status"]["completed"] is False
    assert entry["status"]["messages"][-1][0] == "execution_error"


def test_history_is_kept_in_completion_order_and_bounded(tmp_path):
    queue = PromptQueue(Store(tmp_path / "q.sqlite3"), RecordingHub(), max_history=2)
    for pid in ("a", "b", "c"):
        queue.put(item(queue, pid))
        taken = queue.take(timeout=0)
        queue.finish(taken, {"prompt": taken.as_list(), "outputs": {}, "status": {}, "meta": {}})
    assert list(queue.history) == ["b", "c"]
    restored = restart(queue, max_history=2)
    assert list(restored.history) == ["b", "c"]
    assert restored.history["c"].timing["execution_end_time"] >= restored.history["c"].timing["execution_start_time"]


def test_a_smaller_bound_at_restart_trims_the_stored_history_too(tmp_path):
    queue = PromptQueue(Store(tmp_path / "q.sqlite3"), RecordingHub(), max_history=5)
    for pid in ("a", "b", "c", "d"):
        queue.put(item(queue, pid))
        taken = queue.take(timeout=0)
        queue.finish(taken, {"prompt": taken.as_list(), "outputs": {}, "status": {}, "meta": {}})
    smaller = restart(queue, max_history=2)
    assert list(smaller.history) == ["c", "d"]
    assert [pid for pid, _, _ in smaller.store.history()] == ["c", "d"]
    smaller.put(item(smaller, "e"))
    taken = smaller.take(timeout=0)
    smaller.finish(taken, {"prompt": taken.as_list(), "outputs": {}, "status": {}, "meta": {}})
    assert [pid for pid, _, _ in smaller.store.history()] == ["d", "e"]


def test_a_second_server_on_the_same_file_is_refused(tmp_path):
    first = make_queue(tmp_path)
    first.put(item(first, "a"))
    try:
        Store(tmp_path / "q.sqlite3")
    except StoreBusy as busy:
        assert "q.sqlite3" in str(busy) and "another" in str(busy)
    else:
        raise AssertionError("a second Store opened a file another one holds")


def _run(queue: PromptQueue, prompt_id: str) -> None:
    queue.put(item(queue, prompt_id))
    taken = queue.take(timeout=0)
    queue.finish(taken, {"prompt": taken.as_list(), "outputs": {}, "status": {}, "meta": {}})


def test_a_prompt_id_run_again_replaces_its_entry_and_moves_to_the_end(tmp_path):
    queue = make_queue(tmp_path)
    for prompt_id in ("a", "b", "a"):
        _run(queue, prompt_id)
    assert list(queue.history) == ["b", "a"]
    assert [pid for pid, _, _ in restart(queue).store.history()] == ["b", "a"]


OLD_LAYOUT = """
CREATE TABLE prompts (prompt_id TEXT PRIMARY KEY, seq INTEGER NOT NULL, item TEXT NOT NULL,
    state TEXT NOT NULL, attempts INTEGER NOT NULL DEFAULT 0, started_at INTEGER);
CREATE TABLE meta (key TEXT PRIMARY KEY, value INTEGER NOT NULL);
CREATE TABLE history (seq INTEGER PRIMARY KEY AUTOINCREMENT, prompt_id TEXT UNIQUE NOT NULL,
    entry TEXT NOT NULL, timing TEXT NOT NULL);
INSERT INTO prompts VALUES ('waiting', 7, '[3, "waiting", {}, {"create_time": 1}, ["1"]]', 'pending', 0, NULL);
INSERT INTO meta VALUES ('counter', 4);
INSERT INTO history (prompt_id, entry, timing) VALUES ('old', '{"outputs": {}}', '{}');
"""


def test_a_file_in_the_earlier_table_layout_still_works(tmp_path):
    import sqlite3

    path = tmp_path / "q.sqlite3"
    with sqlite3.connect(path) as db:
        db.executescript(OLD_LAYOUT)
    queue = PromptQueue(Store(path), RecordingHub())
    assert list(queue.history) == ["old"]
    assert queue.next_number() == 4
    waiting = queue.take(timeout=0)
    assert waiting.prompt_id == "waiting"
    queue.finish(waiting, {"prompt": waiting.as_list(), "outputs": {}, "status": {}, "meta": {}})
    _run(queue, "new")
    assert [pid for pid, _, _ in restart(queue).store.history()] == ["old", "waiting", "new"]


def test_the_counter_carries_on_from_the_stored_prompts_front_ones_and_history_included(tmp_path):
    queue = make_queue(tmp_path)
    _run(queue, "done")  # number 0, now in the history
    queue.put(item(queue, "waiting"))  # number 1
    queue.put(item(queue, "front", number=-queue.next_number()))  # number -2
    queue.put(item(queue, "own-number", number=99.5))  # a client's own number is not counted
    assert restart(queue).next_number() == 3
    only_history = make_queue(tmp_path / "other")
    for prompt_id in ("a", "b"):
        _run(only_history, prompt_id)
    assert restart(only_history).next_number() == 2
