"""What the Docker image relies on: ENV_FILE= (no dotenv file), GIT_COMMIT, the shared serving
state folder, the simulators' heartbeat health check."""

from __future__ import annotations

import threading
import time

from churnops import lineage, settings
from churnops.settings import Settings
from ops.health import check_heartbeat
from ops.services import heartbeat_path, repeat


def test_an_empty_env_file_means_the_environment_only(monkeypatch, tmp_path):
    monkeypatch.setenv("ENV_FILE", "")
    assert settings.env_file() is None
    settings.export_env()  # nothing to read, no error
    monkeypatch.setenv("BUCKET", "from-env")
    assert settings.get_settings().bucket == "from-env"
    f = tmp_path / ".env.x"
    f.write_text("BUCKET=from-file\n")
    monkeypatch.setenv("ENV_FILE", str(f))
    monkeypatch.delenv("BUCKET")
    assert settings.env_file() == f and settings.get_settings().bucket == "from-file"


def test_the_image_commit_is_recorded_without_a_checkout(monkeypatch, tmp_path):
    monkeypatch.setenv("GIT_COMMIT", "abc123")
    monkeypatch.setattr(lineage, "PROJECT_ROOT", tmp_path)  # no .git: the image's /app
    assert lineage.git_commit() == "abc123"
    monkeypatch.setenv("GIT_COMMIT", "unknown")
    assert lineage.git_commit() == "unknown"


def test_serving_processes_share_the_model_state_in_serving_state_dir(tmp_path):
    from serving.model import ModelManager, clear_shared_state

    shared = tmp_path / "serving"
    s = Settings(_env_file=None, state_dir=tmp_path / "own", serving_state_dir=shared)
    a, b = (
        ModelManager(s),
        ModelManager(Settings(_env_file=None, state_dir=tmp_path / "other", serving_state_dir=shared)),
    )
    assert a.state_file == b.state_file == shared / "serving-model.json"
    assert ModelManager(Settings(_env_file=None, state_dir=tmp_path / "own")).state_file == (
        tmp_path / "own" / "serving-model.json"
    )
    shared.mkdir()
    a.state_file.write_text("{}")
    clear_shared_state(s)
    assert not a.state_file.exists()


def test_a_simulator_service_is_healthy_while_its_rounds_go_on(tmp_path):
    s = Settings(_env_file=None, state_dir=tmp_path, simulate_interval_s=60, simulate_seconds=30)
    assert "no heartbeat" in check_heartbeat(s)
    stop = threading.Event()
    rounds = []
    t = threading.Thread(target=repeat, args=(lambda: rounds.append(1), 0.05, stop, heartbeat_path(s)))
    t.start()
    while len(rounds) < 2:
        time.sleep(0.01)
    stop.set()
    t.join()
    assert check_heartbeat(s) is None
    heartbeat_path(s).write_text(f"{time.time() - 1000:.3f}\n")  # stuck for 1000 s: limit 2 x 90 + 60
    assert "limit 240 s" in check_heartbeat(s)
