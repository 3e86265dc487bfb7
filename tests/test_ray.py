"""Tagging on a real Ray cluster: a head node and a second worker node started as separate `ray start`
processes on 127.0.0.1 (once per test run, stopped by their pids), jobs submitted with --address."""

from __future__ import annotations

import contextlib
import json
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
from helpers import save_small_checkpoint
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
    """Head and worker node of 1 logical CPU each (few idle worker processes to start). Ray's token
    authentication is on: a fresh token, shared through the environment with every process of the tests."""
    temp_dir = tempfile.mkdtemp(prefix="astray")  # short: Ray's socket paths must fit 107 characters
    port = _free_port()
    common = ["--block", "--num-cpus", "1", "--disable-usage-stats", "--node-ip-address", "127.0.0.1"]
    head = subprocess.Popen([RAY, "start", "--head", "--port", str(port), "--temp-dir", temp_dir,
                             "--include-dashboard", "false", *common], stdout=subprocess.DEVNULL,
                            stderr=subprocess.DEVNULL, start_new_session=True)
    address = f"127.0.0.1:{port}"
    worker = None
    try:
        _wait_for_port(port, head)
        worker = subprocess.Popen([RAY, "start", "--address", address, *common], stdout=subprocess.DEVNULL,
                                  stderr=subprocess.DEVNULL, start_new_session=True)
        _wait_for_nodes(address, 2, worker)
        yield address
    finally:
        started = [process for process in (worker, head) if process is not None and process.poll() is None]
        for process in started:
            os.killpg(process.pid, signal.SIGTERM)  # the group ray start made: its raylet and workers
        deadline = time.monotonic() + 5  # a node stops in about a second; one that lingers is killed
        for process in started:
            try:
                process.wait(timeout=max(0.1, deadline - time.monotonic()))
            except subprocess.TimeoutExpired:
                pass
            with contextlib.suppress(ProcessLookupError):
                os.killpg(process.pid, signal.SIGKILL)  # what is left of the group
        shutil.rmtree(temp_dir, ignore_errors=True)


def _wait_for_port(port: int, process: subprocess.Popen, timeout: float = 120) -> None:
    """Until the head's GCS accepts connections on `port`."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if process.poll() is not None:
            raise RuntimeError(f"ray start exited with {process.returncode}")
        with socket.socket() as probe:
            if probe.connect_ex(("127.0.0.1", port)) == 0:
                return
        time.sleep(0.1)
    raise RuntimeError(f"the Ray head did not listen on {port} in {timeout} s")


def _wait_for_nodes(address: str, count: int, process: subprocess.Popen, timeout: float = 180) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if process.poll() is not None:
            raise RuntimeError(f"ray start exited with {process.returncode}")
        done = subprocess.run([RAY, "status", "--address", address], capture_output=True, text=True)
        if done.returncode == 0 and done.stdout.count("node_") >= count:
            return
        time.sleep(0.5)
    raise RuntimeError(f"the Ray cluster did not reach {count} nodes in {timeout} s")


@pytest.fixture(scope="session")
def driver(cluster):
    """This test process joined to the cluster once: the in-process jobs (`main`) run through this connection
    (a job joins and leaves Ray only where it is not connected yet), so Ray reuses its worker processes."""
    ray.init(address=cluster, logging_level="ERROR", log_to_driver=False)
    yield cluster
    ray.shutdown()


@pytest.fixture(scope="session")
def ray_checkpoint(tmp_path_factory):
    return save_small_checkpoint(tmp_path_factory.mktemp("ray_ckpt"), labels=5, seed=5)


@pytest.fixture(scope="session")
def archive(tmp_path_factory):
    """Short inputs: four 1 s clips (one window of the 1.3 s model), an 8 s file (12 windows), an MP3, a file
    that is not audio and an empty one."""
    folder = tmp_path_factory.mktemp("archive")
    rng = np.random.default_rng(0)
    for i in range(4):
        sf.write(folder / f"clip{i:02d}.flac", (0.1 * rng.standard_normal(16000)).astype(np.float32), 16000)
    sf.write(folder / "long.wav", (0.1 * rng.standard_normal(16000 * 8)).astype(np.float32), 16000)
    encode(folder / "song.mp3", seconds=2.0, bitrate=128000)
    (folder / "broken.mp3").write_text("not audio at all\n")
    (folder / "empty.wav").write_bytes(b"")
    return folder


@pytest.fixture(scope="session")
def service(ray_checkpoint):
    """The HTTP service for `ray_checkpoint`, in this process (uvicorn in a thread, no second model process) on a
    free loopback port, for the parity of the three front ends; stopped at the end of the run."""
    pytest.importorskip("fastapi")
    uvicorn = pytest.importorskip("uvicorn")
    import threading

    from ast_audio import AudioClassifier
    from ast_audio.service.app import create_app

    app = create_app(AudioClassifier.from_pretrained(ray_checkpoint, threads=1))
    server = uvicorn.Server(uvicorn.Config(app, host="127.0.0.1", port=_free_port(), log_level="warning"))
    thread = threading.Thread(target=server.run, name="test-service", daemon=True)
    thread.start()
    deadline = time.monotonic() + 60
    while not server.started and thread.is_alive() and time.monotonic() < deadline:
        time.sleep(0.05)
    assert server.started, "the in-process service did not start in 60 s"
    yield server.config.port
    server.should_exit = True
    thread.join(timeout=30)


def post(port: int, path: str, data: bytes) -> tuple[int, dict]:
    import http.client

    connection = http.client.HTTPConnection("127.0.0.1", port, timeout=60)
    try:
        connection.request("POST", path, body=data, headers={"Content-Type": "application/octet-stream"})
        response = connection.getresponse()
        return response.status, json.loads(response.read())
    finally:
        connection.close()


def model_actors() -> list[dict]:
    """The model replicas the cluster has run (Ray Data's map workers: the only actor stage), from the GCS; the
    public state API would need the dashboard."""
    from ray._private import state

    return [actor for actor in state.actors().values() if "MapWorker" in actor["ActorClassName"]]


def assert_same_record(got, expected, where="record"):
    """Equal JSON records: the same keys and values at every level, floats within 1e-5."""
    if isinstance(expected, dict):
        assert isinstance(got, dict) and list(got) == list(expected), f"{where}: {list(got)} != {list(expected)}"
        for key in expected:
            assert_same_record(got[key], expected[key], f"{where}.{key}")
    elif isinstance(expected, list):
        assert isinstance(got, list) and len(got) == len(expected), f"{where}: {got} != {expected}"
        for i, (a, b) in enumerate(zip(got, expected)):
            assert_same_record(a, b, f"{where}[{i}]")
    elif isinstance(expected, float):
        assert got == pytest.approx(expected, abs=1e-5), f"{where}: {got} != {expected}"
    else:
        assert got == expected, f"{where}: {got!r} != {expected!r}"


# The answers of the parity job: a class selection (two of the model's classes and a group of two others) and
# events, thresholds between the track values of long.wav's "sound 4" (0.2921-0.3007; none within 5e-4 of
# them) so that it gives events, one of them reaching the file's end, and the other classes none; two rounds
# of the finer pass move boundaries off the window edges.
SELECTED = ["sound 4", "sound 1", "pair"]
ANSWERS = ["--events", "--threshold", "0.297", "--threshold-off", "0.296", "--include", "sound 4", "--include",
           "sound 1", "--include", "pair", "--group", "pair=sound 0,sound 3", "--refine", "2"]


def json_lines(*files) -> dict[str, dict]:
    rows = [json.loads(line) for name in files for line in open(name, encoding="utf-8").read().split("\n") if line]
    assert len({r["path"] for r in rows}) == len(rows), "an input written twice"
    return {r["path"]: r for r in rows}


@pytest.mark.parametrize("option", ["num_workers", "max_windows_per_row", "decode_tasks_per_worker"])
def test_counts_below_one_are_refused_before_ray_starts(option, ray_checkpoint):
    """(Before any test joins the cluster.)"""
    from ast_audio.distributed import tag
    from ast_audio.errors import ConfigError

    with pytest.raises(ConfigError, match=f"{option} must be at least 1, got 0"):
        tag(["a.wav"], ray_checkpoint, **{option: 0})
    assert not ray.is_initialized()


def test_answers_naming_a_label_the_model_lacks_are_refused_before_ray_starts(ray_checkpoint, tmp_path, capsys):
    """(Before any test joins the cluster.) The Python API and the command line check the class selection
    against the checkpoint's labels on the driver: one line naming the label, nothing written."""
    from ast_audio.distributed import tag
    from ast_audio.errors import ConfigError

    with pytest.raises(ConfigError, match="no such sound"):
        tag(["a.wav"], ray_checkpoint, include=["sound 1", "no such sound"], events=True)
    code = main(["classify", "a.wav", "--model", ray_checkpoint, "--engine", "ray", "-o", str(tmp_path / "out"),
                 "--group", "pair=sound 0,no such sound"])
    err = capsys.readouterr().err
    assert code == 2 and "no such sound" in err and len(err.strip().splitlines()) == 1, err
    assert not ray.is_initialized() and not (tmp_path / "out").exists()


def test_cluster_fit_rule():
    """The rule on node resources alone: the default lowered to leave every decoding task room, a value given
    kept or refused, GPUs the nodes lack refused."""
    from ast_audio.distributed.resources import fit
    from ast_audio.errors import UsageError

    two = [{"CPU": 1.0}, {"CPU": 1.0}]
    assert fit(two, 1, None, 0, 1).cpus_per_worker == 1.0 and fit(two, 1, None, 0, 1).note is None
    assert fit(two, 2, None, 0, 2).cpus_per_worker == 0.75
    assert fit([{"CPU": 2.0}], 2, None, 0, 2).cpus_per_worker == 0.75
    assert fit([{"CPU": 16.0, "GPU": 4.0}], 4, None, 1, 16).cpus_per_worker == 1.0
    assert fit([{"CPU": 4.0, "GPU": 4.0}], 4, None, 1, 16).cpus_per_worker == 0.5  # one per GPU, few CPUs
    assert fit(two, 2, 0.5, 0, 2).cpus_per_worker == 0.5
    with pytest.raises(UsageError, match="cannot hold --num-workers 2 model replicas of a CPU share and 1 GPUs"):
        fit([{"CPU": 8.0, "GPU": 1.0}], 2, None, 1, 8)
    with pytest.raises(UsageError, match="cannot hold --num-workers 2 model replicas of 1.5 CPUs each"):
        fit(two, 2, 1.5, 0, 2)


def test_replicas_taking_every_cpu_are_fitted_and_give_the_local_records(driver, ray_checkpoint, archive, tmp_path,
                                                                          capsys, service):
    """Two replicas of the default 1 CPU would take both CPUs of the cluster and leave decoding none (the job
    hung for ever): they are lowered to fit, with a note, and the job finishes within its stall bound. Each
    row, read from Ray's Parquet, is the local engine's JSON lines record, with the same class selection
    (--include, --group) and the same `events` (--events, its thresholds, the finer pass); the Parquet schema is
    its typed form (`events` a list of structs). The parity of the three front ends: a long file (12 windows)
    and a file that is not audio give the same record, field by field, from the local engine, Ray and the
    service (its answer to the same selection and events as query parameters, the upload named as the file;
    a bad upload's error, its status from the error's type)."""
    from urllib.parse import urlencode

    from ast_audio import AudioClassifier
    from ast_audio.answers.events import EventOptions
    from ast_audio.answers.options import AnswerOptions
    from ast_audio.jobs.records import clip_json, json_record, schema

    assert main(["classify", str(archive), "--model", ray_checkpoint, "-f", "jsonl", "-o", str(tmp_path / "l.jsonl"),
                 "-q", *ANSWERS]) == 3
    local = json_lines(tmp_path / "l.jsonl")
    capsys.readouterr()
    started = time.monotonic()
    code = main(["classify", str(archive), "--model", ray_checkpoint, "--engine", "ray", "--address", driver,
                 "-o", str(tmp_path / "ray"), "--num-workers", "2", "--batch-size", "4", "--stall-timeout", "300",
                 *ANSWERS])
    err = capsys.readouterr().err
    assert code == 3 and time.monotonic() - started < 300, err
    assert "each model replica reserves 0.75 CPU (not 1)" in err and "2 of 8 files failed" in err, err
    assert "6 of 8 files, 0.004 h of audio in" in err, err  # the closing line of the local engine's progress
    assert all(line.startswith("ast-audio classify: ") for line in err.splitlines()), err  # nothing of Ray's
    table = pq.read_table(str(tmp_path / "ray"))
    assert table.schema == schema()
    rows = {row["path"]: json_record(row) for row in table.to_pylist()}
    assert rows.keys() == local.keys() and len(rows) == 8
    for path, record in local.items():
        assert_same_record(rows[path], record, path)
    scores = [label["score"] for row in rows.values() for label in row.get("labels", [])]
    assert sum(score != round(score, 6) for score in scores) > len(scores) / 2  # full precision, not 6 decimals
    assert "not an audio file" in rows[str(archive / "broken.mp3")]["error"]
    assert "empty file" in rows[str(archive / "empty.wav")]["error"]
    assert len(rows[str(archive / "long.wav")]["windows"]) == 12  # its windows span several model batches
    assert len({actor["Address"]["NodeID"] for actor in model_actors()}) == 2  # replicas on both nodes
    done = [row for row in rows.values() if "error" not in row]
    assert all(sorted(label["label"] for label in row["labels"]) == sorted(SELECTED) for row in done)
    assert all(isinstance(row["events"], list) for row in done)
    events = rows[str(archive / "long.wav")]["events"]
    assert len(events) >= 2 and {event["label"] for event in events} == {"sound 4"}, events  # others never fire
    assert events[-1]["end"] == 8.0 and all(e["score"] >= 0.297 and e["mean"] >= 0.296 for e in events), events
    edges = {edge for window in rows[str(archive / "long.wav")]["windows"] for edge in (window["start"], window["end"])}
    assert {edge for e in events for edge in (e["start"], e["end"])} - edges, events  # the finer pass ran

    # The service takes the same answers as query parameters, except the finer pass: it is compared with the
    # local engine's record of those.
    answers = AnswerOptions(events=EventOptions(threshold=0.297, threshold_off=0.296), include=SELECTED,
                            groups={"pair": ["sound 0", "sound 3"]})
    query = urlencode([("events", "true"), ("threshold", "0.297"), ("threshold_off", "0.296"),
                       *(("include", label) for label in SELECTED), ("group", "pair=sound 0,sound 3")])
    first_pass = {result.source: clip_json(result) for result in AudioClassifier.from_pretrained(
        ray_checkpoint, answers=answers).iter_classify([str(archive / "long.wav"), str(archive / "broken.mp3")])}
    assert first_pass[str(archive / "long.wav")]["events"]
    for name, status in (("long.wav", 200), ("broken.mp3", 415)):
        path = str(archive / name)
        got, answer = post(service, f"/v1/classify?filename={name}&{query}", (archive / name).read_bytes())
        assert got == status, answer
        served = answer if status == 200 else {"path": name, **answer}
        expected = {key: value.replace(path, name) if isinstance(value, str) else value
                    for key, value in first_pass[path].items()}
        assert_same_record(served, expected, f"served {name}")
        assert_same_record(rows[path], local[path], f"ray {name}")


def test_a_pipeline_that_cannot_run_is_refused_naming_the_options(driver, ray_checkpoint, archive, tmp_path, capsys):
    started = time.monotonic()
    code = main(["classify", str(archive / "clip00.flac"), "--model", ray_checkpoint, "--engine", "ray", "--address",
                 driver, "-o", str(tmp_path / "out"), "--num-workers", "2", "--cpus-per-worker", "1"])
    err = capsys.readouterr().err
    assert code == 2 and time.monotonic() - started < 60, err
    assert "--num-workers 2 x --cpus-per-worker 1 leave no CPU of the cluster (2 CPUs on 2 nodes (1, 1))" in err
    assert "a --cpus-per-worker of at most 0.75" in err and len(err.strip().splitlines()) == 1, err
    assert not (tmp_path / "out").exists()  # refused before anything was written


def test_python_api_reads_long_files_in_the_replica_embeds_and_reports_a_stall(driver, ray_checkpoint, archive):
    """`tag` on a Ray Dataset input: long.wav (12 windows) is over max_windows_per_row, so its replica reads it
    window by window; records (with the answers' fields as keywords: a class left out, events, decisions) and
    embeddings equal the local engine's. Then a pipeline that waits for a GPU the cluster lacks is reported and
    given up within the bound."""
    from ast_audio import AudioClassifier
    from ast_audio.answers.events import EventOptions
    from ast_audio.distributed import tag
    from ast_audio.distributed.resources import waiting_for
    from ast_audio.distributed.stream import StalledError, stream_rows
    from ast_audio.jobs.records import clip_record, json_record, schema

    paths = [str(archive / name) for name in ("long.wav", "clip00.flac", "broken.mp3")]
    answers = {"exclude": ["sound 2"], "events": EventOptions(threshold=0.297, threshold_off=0.296), "decide": 0.297}
    dataset = tag(ray.data.from_items([{"path": p} for p in paths]), ray_checkpoint, max_windows_per_row=8,
                  batch_size=3, top_k=3, embeddings=True, **answers)
    tables = list(dataset.iter_batches(batch_size=None, batch_format="pyarrow"))
    rows = {row["path"]: row for table in tables for row in table.to_pylist()}
    reports = []
    stalled = ray.data.from_items([{"x": 1}]).map(lambda row: row, num_gpus=1)
    started = time.monotonic()
    ignoring = signal.signal(signal.SIGINT, lambda *_: None)  # a process whose SIGINT handler does nothing
    with pytest.raises(StalledError, match=r"^no result for 2\.\d s, giving up: [\d.]+ of 2 CPUs free; the job needs "
                       r"1 model replica of 1 CPU \+ 1 GPU and decoding tasks of 0.25 CPU"):
        list(stream_rows(stalled, report_after_s=0.5, give_up_after_s=2, waiting=lambda: waiting_for(1, 1.0, 1.0),
                         report=reports.append))
    assert signal.getsignal(signal.SIGINT) is not signal.default_int_handler  # its own handler given back
    signal.signal(signal.SIGINT, ignoring)
    assert time.monotonic() - started < 30 and reports, reports
    assert reports[0].startswith("no result for 0.") and " s: " in reports[0], reports
    assert sorted(rows) == sorted(paths)
    assert "not an audio file" in rows[paths[2]]["error"]
    local = AudioClassifier.from_pretrained(ray_checkpoint, batch_size=3, **answers).classify(paths[:2])
    for result in local:
        expected = clip_record(result, 3, True, embeddings=True)
        assert_same_record(json_record({**rows[result.source], "embedding": None}),
                           json_record({**expected, "embedding": None}), result.source)
        np.testing.assert_allclose(rows[result.source]["embedding"], result.embedding, atol=1e-5)
    assert len(rows[paths[0]]["windows"]) == 12
    assert rows[paths[0]]["events"] and all(label["label"] != "sound 2" for label in rows[paths[0]]["labels"])
    assert any(window["decisions"] for window in rows[paths[0]]["windows"])  # decided in the replica as locally
    assert all(table.schema == schema(64) for table in tables)


def test_resume_adds_the_rest_with_the_same_options_only(driver, ray_checkpoint, archive, tmp_path, capsys):
    """A job with events over two clips, then the folder of four: without --resume refused, with another
    --model or other answers (thresholds, a selection) refused naming them, with --resume the other two added
    (JSON lines in the local form, an `events` list in each). A file a killed job left half-written does not
    count and reading the directory leaves it in place; the resume sets it aside."""
    from ast_audio.jobs.directory import written_inputs

    folder = tmp_path / "clips"
    folder.mkdir()
    for i in range(4):
        shutil.copy(archive / f"clip{i:02d}.flac", folder / f"clip{i:02d}.flac")
    output = tmp_path / "tags"
    common = ["--model", ray_checkpoint, "--engine", "ray", "--address", driver, "-f", "jsonl", "-o", str(output),
              "--events"]
    assert main(["classify", str(folder / "clip00.flac"), str(folder / "clip01.flac"), *common, "-q"]) == 0
    half = output / "20000101T000000-1-00000.jsonl"
    half.write_text(json.dumps({"path": str(folder / "clip02.flac"), "error": None})[:20])
    before = sorted(os.listdir(output))
    assert written_inputs(str(output)) == {str(folder / "clip00.flac"), str(folder / "clip01.flac")}
    assert sorted(os.listdir(output)) == before  # reading changes nothing
    capsys.readouterr()
    assert main(["classify", str(folder), *common]) == 2
    assert "already holds results: pass --resume" in capsys.readouterr().err
    other = save_small_checkpoint(tmp_path / "other", labels=5, seed=6)
    assert main(["classify", str(folder), *common[2:], "--model", other, "--resume"]) == 2
    err = capsys.readouterr().err
    assert "cannot resume: it was written with other options (model was" in err and other in err, err
    assert main(["classify", str(folder), *common, "--resume", "--threshold", "0.6", "--include", "sound 1"]) == 2
    err = capsys.readouterr().err
    assert "cannot resume: it was written with other options (events was {'threshold': 0.5," in err, err
    assert "now {'threshold': 0.6," in err and "selection was default, now" in err and "sound 1" in err, err
    assert main(["classify", str(folder), *common, "--resume"]) == 0
    err = capsys.readouterr().err
    assert "2 of 4 files already done, 2 to do" in err, err
    assert "set aside as .20000101T000000-1-00000.jsonl.incomplete" in err, err
    rows = json_lines(*(output / name for name in os.listdir(output) if name.endswith(".jsonl")))
    assert sorted(rows) == sorted(str(path) for path in folder.iterdir())
    assert all(list(row) == ["path", "duration", "pooling", "labels", "windows", "events"] for row in rows.values())
    assert all(row["events"] == [] for row in rows.values())  # scores of these clips stay under 0.31
    assert all(list(label) == ["label", "score"] for row in rows.values() for label in row["labels"])


def test_killed_actor_is_replaced_and_every_input_written_once(driver, ray_checkpoint, archive, tmp_path):
    """A job in its own process (joining the cluster itself: Ray's own lines stay off its stderr) whose model
    replica is killed: Ray starts another, and every input is written once."""
    folder = tmp_path / "few"
    folder.mkdir()
    for name in ["clip00.flac", "clip01.flac", "clip02.flac", "clip03.flac", "broken.mp3"]:
        shutil.copy(archive / name, folder / name)
    output = tmp_path / "fault"
    seen = {actor["ActorID"] for actor in model_actors()}  # the earlier tests' replicas
    job = subprocess.Popen([sys.executable, "-m", "ast_audio", "classify", str(folder), "--model", ray_checkpoint,
                            "--engine", "ray", "--address", driver, "-o", str(output), "--batch-size", "1",
                            "--threads", "1", "--stall-timeout", "120"], stdout=subprocess.DEVNULL,
                           stderr=subprocess.PIPE, text=True)
    killed = None
    deadline = time.monotonic() + 180
    while killed is None and time.monotonic() < deadline and job.poll() is None:
        alive = [actor for actor in model_actors()
                 if actor["State"] == "ALIVE" and actor["Pid"] and actor["ActorID"] not in seen]
        if alive:
            killed = alive[0]["Pid"]
            os.kill(killed, signal.SIGKILL)
        time.sleep(0.05)
    _, err = job.communicate(timeout=300)
    assert killed is not None, "no model actor was seen alive"
    assert job.returncode == 3, err
    assert all(line.startswith("ast-audio classify: ") for line in err.splitlines()), err
    rows = pq.read_table(str(output)).to_pylist()
    assert len(rows) == 5 and len({r["path"] for r in rows}) == 5
    assert sum(r["error"] is not None for r in rows) == 1
