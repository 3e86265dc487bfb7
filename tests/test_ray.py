"""Tagging on a real Ray cluster: a head node and a second worker node started as separate `ray start`
processes on 127.0.0.1 (once per test run, stopped by their pids), jobs submitted with --address."""

from __future__ import annotations

import os
import secrets
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time

import numpy as np
import pytest
import soundfile as sf

from ast_audio.cli import main
from conftest import save_small_checkpoint
from encoders import encode

# Ray reads these when it is imported: token authentication on, with a fresh token this test run's processes
# (nodes, drivers, the commands under test) share through the environment.
os.environ.setdefault("RAY_AUTH_MODE", "token")
os.environ.setdefault("RAY_AUTH_TOKEN", secrets.token_hex(16))
ray = pytest.importorskip("ray")
pq = pytest.importorskip("pyarrow.parquet")
RAY = os.path.join(os.path.dirname(sys.executable), "ray")


def _free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


@pytest.fixture(scope="session")
def cluster():
    """Head (4 logical CPUs) and worker node (4 logical CPUs); each fits one model actor of 3 CPUs. Ray's token
    authentication is on: a fresh token, shared through the environment with every process of the tests."""
    temp_dir = tempfile.mkdtemp(prefix="astray")  # short: Ray's socket paths must fit 107 characters
    port = _free_port()
    common = ["--block", "--num-cpus", "4", "--disable-usage-stats", "--node-ip-address", "127.0.0.1"]
    head = subprocess.Popen([RAY, "start", "--head", "--port", str(port), "--temp-dir", temp_dir,
                             "--include-dashboard", "false", *common], stdout=subprocess.DEVNULL,
                            stderr=subprocess.DEVNULL, start_new_session=True)
    address = f"127.0.0.1:{port}"
    worker = None
    try:
        _wait_for_nodes(address, 1, head)
        worker = subprocess.Popen([RAY, "start", "--address", address, *common], stdout=subprocess.DEVNULL,
                                  stderr=subprocess.DEVNULL, start_new_session=True)
        _wait_for_nodes(address, 2, worker)
        yield address
    finally:
        for process in (worker, head):
            if process is not None and process.poll() is None:
                os.killpg(process.pid, signal.SIGTERM)  # the group ray start made: its raylet and workers
                try:
                    process.wait(timeout=30)
                except subprocess.TimeoutExpired:
                    os.killpg(process.pid, signal.SIGKILL)
        shutil.rmtree(temp_dir, ignore_errors=True)


def _wait_for_nodes(address: str, count: int, process: subprocess.Popen, timeout: float = 180) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if process.poll() is not None:
            raise RuntimeError(f"ray start exited with {process.returncode}")
        done = subprocess.run([RAY, "status", "--address", address], capture_output=True, text=True)
        if done.returncode == 0 and done.stdout.count("node_") >= count:
            return
        time.sleep(1)
    raise RuntimeError(f"the Ray cluster did not reach {count} nodes in {timeout} s")


@pytest.fixture(scope="session")
def ray_checkpoint(tmp_path_factory):
    return save_small_checkpoint(tmp_path_factory.mktemp("ray_ckpt"), labels=5, seed=5)


@pytest.fixture(scope="session")
def archive(tmp_path_factory):
    folder = tmp_path_factory.mktemp("archive")
    rng = np.random.default_rng(0)
    for i in range(24):
        sf.write(folder / f"clip{i:02d}.flac", (0.1 * rng.standard_normal(16000 * 2)).astype(np.float32), 16000)
    sf.write(folder / "long.wav", (0.1 * rng.standard_normal(16000 * 20)).astype(np.float32), 16000)  # 30 windows
    encode(folder / "song.mp3", seconds=3.0, bitrate=128000)
    (folder / "broken.mp3").write_text("not audio at all\n")
    (folder / "empty.wav").write_bytes(b"")
    return folder


def model_actors() -> list[dict]:
    """The model replicas the cluster has run (Ray Data's map workers: the only actor stage), from the GCS; the
    public state API would need the dashboard."""
    from ray._private import state

    return [actor for actor in state.actors().values() if "MapWorker" in actor["ActorClassName"]]


def read_rows(directory) -> dict[str, dict]:
    table = pq.read_table(str(directory))
    rows = table.to_pylist()
    assert len({r["path"] for r in rows}) == len(rows), "an input written twice"
    return {r["path"]: r for r in rows}


def local_rows(archive, checkpoint, output, *flags) -> dict[str, dict]:
    assert main(["classify", str(archive), "--model", checkpoint, "-f", "parquet", "-o", str(output), "-q",
                 *flags]) == 3
    return read_rows(output)


def test_two_node_job_matches_the_local_engine(cluster, ray_checkpoint, archive, tmp_path, capsys):
    local = local_rows(archive, ray_checkpoint, tmp_path / "local.parquet")
    code = main(["classify", str(archive), "--model", ray_checkpoint, "--engine", "ray", "--address", cluster,
                 "-o", str(tmp_path / "ray"), "--num-workers", "2", "--cpus-per-worker", "3", "--batch-size", "4"])
    err = capsys.readouterr().err
    assert code == 3 and "2 of 28 files failed" in err, err
    rows = read_rows(tmp_path / "ray")
    assert rows.keys() == local.keys() and len(rows) == 28
    assert pq.read_schema(str(next((tmp_path / "ray").glob("*.parquet")))) .names == \
        pq.read_schema(str(tmp_path / "local.parquet")).names
    for path, row in rows.items():
        expected = local[path]
        assert row["error"] == expected["error"] and row["labels"] == expected["labels"]
        if row["error"] is None:
            np.testing.assert_allclose(row["scores"], expected["scores"], atol=1e-5)
            assert len(row["timeline"]) == len(expected["timeline"])
            for a, b in zip(row["timeline"], expected["timeline"]):
                assert (a["start"], a["end"], a["labels"]) == (b["start"], b["end"], b["labels"])
                np.testing.assert_allclose(a["scores"], b["scores"], atol=1e-5)
    assert "not an audio file" in rows[str(archive / "broken.mp3")]["error"]
    assert "empty file" in rows[str(archive / "empty.wav")]["error"]
    assert len(rows[str(archive / "long.wav")]["timeline"]) == 30  # its windows span several model batches
    ray.init(address=cluster, logging_level="ERROR", log_to_driver=False)
    try:
        assert len({actor["Address"]["NodeID"] for actor in model_actors()}) == 2  # replicas on both nodes
    finally:
        ray.shutdown()


def test_embeddings_on_ray_equal_the_local_ones(cluster, ray_checkpoint, archive, tmp_path):
    from ast_audio import AudioClassifier

    song = str(archive / "song.mp3")
    assert main(["embed", song, str(archive / "long.wav"), "--model", ray_checkpoint, "--engine", "ray", "--address",
                 cluster, "-o", str(tmp_path / "emb")]) == 0
    table = pq.read_table(str(tmp_path / "emb"))
    import pyarrow as pa

    assert table.schema.field("embedding").type == pa.list_(pa.float32(), 64)
    rows = {r["path"]: r for r in table.to_pylist()}
    local = AudioClassifier.from_pretrained(ray_checkpoint).classify([song, str(archive / "long.wav")])
    for result in local:
        np.testing.assert_allclose(rows[result.source]["embedding"], result.embedding, atol=1e-5)


def test_tag_reads_long_files_in_the_replica_and_equals_the_local_engine(cluster, ray_checkpoint, archive):
    """The Python entry point on a Ray Dataset input; long.wav (30 windows) is over max_windows_per_row, so
    its replica reads it window by window instead of receiving its features."""
    from ast_audio import AudioClassifier
    from ast_audio.distributed import tag

    paths = [str(archive / name) for name in ("long.wav", "clip00.flac", "song.mp3", "broken.mp3")]
    ray.init(address=cluster, logging_level="ERROR", log_to_driver=False)
    try:
        rows = tag(ray.data.from_items([{"path": p} for p in paths]), ray_checkpoint, max_windows_per_row=8,
                   batch_size=3, top_k=5).take_all()
    finally:
        ray.shutdown()
    got = {row["path"]: row for row in rows}
    assert sorted(got) == sorted(paths)
    assert "not an audio file" in got[paths[3]]["error"]
    for result in AudioClassifier.from_pretrained(ray_checkpoint, batch_size=3).classify(paths[:3]):
        row = got[result.source]
        assert row["error"] is None and row["labels"] == [item["label"] for item in result.top(5)]
        np.testing.assert_allclose(row["scores"], [item["score"] for item in result.top(5)], atol=1e-5)
        assert [(w["start"], w["end"]) for w in row["timeline"]] == [(w["start"], w["end"]) for w in result.timeline()]
    assert len(got[paths[0]]["timeline"]) == 30


def test_stopped_job_resumes_where_it_stopped(cluster, ray_checkpoint, archive, tmp_path):
    folder = tmp_path / "small"
    folder.mkdir()
    clips = sorted(n for n in os.listdir(archive) if n.startswith("clip"))
    for name in clips:
        shutil.copy(archive / name, folder / name)
    output = tmp_path / "resumed"
    # One file per model batch and two rows per output file: the first rows are on disk while the rest run.
    arguments = ["classify", str(folder), "--model", ray_checkpoint, "--engine", "ray", "--address", cluster,
                 "-o", str(output), "--chunk-files", "2", "--batch-size", "1"]
    process = subprocess.Popen([sys.executable, "-m", "ast_audio", *arguments], stdout=subprocess.DEVNULL,
                               stderr=subprocess.PIPE, text=True)
    deadline = time.monotonic() + 180
    while time.monotonic() < deadline and process.poll() is None:
        if output.is_dir() and list(output.glob("*.parquet")):
            break
        time.sleep(0.05)
    process.send_signal(signal.SIGINT)
    process.communicate(timeout=120)
    first = {r["path"] for r in pq.read_table(str(output)).to_pylist()}
    assert 0 < len(first) < len(clips), len(first)
    refused = subprocess.run([sys.executable, "-m", "ast_audio", *arguments], capture_output=True, text=True)
    assert refused.returncode == 1 and "pass --resume" in refused.stderr
    again = subprocess.run([sys.executable, "-m", "ast_audio", *arguments, "--resume"], capture_output=True, text=True,
                           timeout=300)
    assert again.returncode == 0, again.stderr
    assert f"{len(first)} of {len(clips)} files already done, {len(clips) - len(first)} to do" in again.stderr
    assert len(read_rows(output)) == len(clips)


def test_killed_actor_is_replaced_and_every_input_written_once(cluster, ray_checkpoint, archive, tmp_path):
    folder = tmp_path / "few"
    folder.mkdir()
    for name in [*sorted(n for n in os.listdir(archive) if n.startswith("clip"))[:6], "broken.mp3"]:
        shutil.copy(archive / name, folder / name)
    output = tmp_path / "fault"
    job = subprocess.Popen([sys.executable, "-m", "ast_audio", "classify", str(folder), "--model", ray_checkpoint,
                            "--engine", "ray", "--address", cluster, "-o", str(output), "--batch-size", "1",
                            "--threads", "1"], stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
    ray.init(address=cluster, logging_level="ERROR", log_to_driver=False)
    killed = None
    try:
        deadline = time.monotonic() + 180
        while killed is None and time.monotonic() < deadline and job.poll() is None:
            alive = [actor for actor in model_actors() if actor["State"] == "ALIVE" and actor["Pid"]]
            if alive:
                killed = alive[0]["Pid"]
                os.kill(killed, signal.SIGKILL)
            time.sleep(0.05)
    finally:
        ray.shutdown()
    _, err = job.communicate(timeout=300)
    assert killed is not None, "no model actor was seen alive"
    assert job.returncode == 3, err
    rows = read_rows(output)
    assert len(rows) == 7 and sum(r["error"] is not None for r in rows.values()) == 1


def test_a_half_written_output_file_is_set_aside_and_its_inputs_done_again(tmp_path, capsys):
    from ast_audio.commands._ray import written_inputs
    from ast_audio.inference.results import ClipResult
    from ast_audio.inference.tabular import clip_record, write_parquet

    output = tmp_path / "tags"
    output.mkdir()
    write_parquet([clip_record(ClipResult(source=f"a{i}.wav", error="x")) for i in range(3)], output / "one.parquet")
    write_parquet([clip_record(ClipResult(source=f"b{i}.wav", error="x")) for i in range(3)], output / "two.parquet")
    whole = (output / "two.parquet").read_bytes()
    (output / "two.parquet").write_bytes(whole[: len(whole) // 2])  # as a job killed while writing leaves it
    assert written_inputs(str(output)) == {"a0.wav", "a1.wav", "a2.wav"}
    assert sorted(os.listdir(output)) == [".two.parquet.incomplete", "one.parquet"]
    assert "two.parquet: unreadable" in capsys.readouterr().err
    assert pq.read_table(str(output)).num_rows == 3  # the directory reads again


@pytest.mark.parametrize("option", ["num_workers", "max_windows_per_row", "decode_tasks_per_worker"])
def test_counts_below_one_are_refused_before_ray_starts(option, ray_checkpoint):
    from ast_audio.distributed import tag
    from ast_audio.errors import ConfigError

    with pytest.raises(ConfigError, match=f"{option} must be at least 1, got 0"):
        tag(["a.wav"], ray_checkpoint, **{option: 0})
    assert not ray.is_initialized()


def test_json_lines_output_on_ray(cluster, ray_checkpoint, archive, tmp_path):
    import json

    from ast_audio.commands._ray import written_inputs

    paths = [str(archive / "clip00.flac"), str(archive / "broken.mp3")]
    output = tmp_path / "lines"
    assert main(["classify", *paths, "--model", ray_checkpoint, "--engine", "ray", "--address", cluster,
                 "-f", "jsonl", "-o", str(output), "-q"]) == 3
    rows = [json.loads(line) for name in output.glob("*.json") for line in name.read_text().splitlines()]
    assert sorted(row["path"] for row in rows) == sorted(paths) and written_inputs(str(output)) == set(paths)
    by_path = {row["path"]: row for row in rows}
    assert by_path[paths[0]]["error"] is None and len(by_path[paths[0]]["labels"]) == 5
    assert "not an audio file" in by_path[paths[1]]["error"]
