"""What a new user meets on a first try at the command line: windows of any window/hop, output paths checked
before the model loads, progress that survives a kill, progress off a terminal, formats from the extension."""

from __future__ import annotations

import itertools
import json
import math
import os
import re
import subprocess
import sys

import numpy as np
import pytest
import soundfile as sf

from ast_audio.cli import main
from ast_audio.features.timing import Timing
from ast_audio.inference.windows import plan_windows, window_and_hop
from helpers import power_cut_after, save_small_checkpoint

RATE = 16000
WINDOW = (128 - 1) * 0.01 + 0.025  # the small checkpoint's 128 input frames: 1.295 s


@pytest.fixture(scope="module")
def checkpoint(tmp_path_factory):
    return save_small_checkpoint(tmp_path_factory.mktemp("ckpt"), labels=4)


def write(path, seconds, seed=0):
    rng = np.random.default_rng(seed)
    sf.write(path, (0.1 * rng.standard_normal(int(seconds * RATE))).astype(np.float32), RATE)
    return str(path)


def run_cli(args, capsys):
    code = main(args)
    captured = capsys.readouterr()
    return code, captured.out, captured.err


# ------------------------------------------------------------------------------------------------ windows
def _combinations():
    durations = [0.05, 0.175, 1.0, 1.295, 1.3, 2.0, 4.999, 5.0, 5.0001, 6.42, 10.255, 10.3, 59.99, 90.0, 90.05,
                 600.0]
    windows = [0.175, 0.5, 1.0, 1.295, 2.0, 10.255]
    hops = [0.01, 0.1, 0.3, 0.5, 0.6475, 1.0, 1.295, 2.5, 5.0, 5.1275, 10.255, 30.0, 100.0]
    rng = np.random.default_rng(0)
    drawn = [(float(rng.uniform(0.03, 200)), float(rng.uniform(0.175, 10.255)), float(rng.uniform(0.01, 60)))
             for _ in range(300)]
    return [*itertools.product(durations, windows, hops), *drawn]


def test_every_window_lies_inside_the_input_for_any_window_and_hop():
    for duration, window, hop in _combinations():
        case = (duration, window, hop)
        spans = np.array(plan_windows(duration, window, hop))
        starts, ends = spans[:, 0], spans[:, 1]
        assert starts[0] == 0.0, case
        assert (starts < duration).all() and (ends > starts).all() and (ends <= duration).all(), case
        assert (np.diff(starts) > 1e-9).all(), case  # no window twice
        # full windows only, unless the whole input is shorter than one window (one zero-padded window)
        np.testing.assert_allclose(ends - starts, min(window, duration), atol=1e-9, err_msg=str(case))
        grid = np.round(np.arange(len(starts)) * hop, 9)
        np.testing.assert_array_equal(starts[:-1], grid[:-1], err_msg=str(case))  # on the grid, no float noise
        # the last one on the grid, or moved back (by less than a hop) to end at the end
        assert starts[-1] == grid[-1] or (ends[-1] == duration and grid[-1] - hop < starts[-1] < grid[-1]), case
        if hop <= window:  # covered: no gaps, and the last window is the first to reach the end
            assert ends[-1] == pytest.approx(duration, abs=1e-9) and (ends[:-1] < duration - 1e-9).all(), case
        else:  # sparse: one window at each start before the end
            assert len(spans) == max(1, math.ceil(duration / hop - 1e-9)), case


def test_sparse_hops_from_the_issue():
    assert plan_windows(6.42, 1.0, 5.0) == [(0.0, 1.0), (5.0, 6.0)]
    assert plan_windows(90.0, 1.0, 30.0) == [(0.0, 1.0), (30.0, 31.0), (60.0, 61.0)]
    assert plan_windows(5.0, 2.0, 2.5) == [(0.0, 2.0), (2.5, 4.5)]
    assert plan_windows(90.5, 1.0, 30.0)[-1] == (89.5, 90.5)  # a start before the end: moved back, full length
    assert plan_windows(5.0, 1.28, 0.64)[-2:] == [(3.2, 4.48), (3.72, 5.0)]  # the last window ends at the end
    assert plan_windows(19.5, 1.28, 0.64125)[15] == (9.61875, 10.89875)  # 15 * 0.64125 without float noise
    for bad in [(0.0, 1.0, 1.0), (-1.0, 1.0, 1.0), (math.nan, 1.0, 1.0)]:
        with pytest.raises(ValueError, match="expected a positive duration"):
            plan_windows(*bad)
    with pytest.raises(ValueError, match="window and hop must be positive"):
        plan_windows(10.0, 1.0, math.inf)


def test_default_window_and_hop_have_one_rule():
    timing = Timing(input_frames=128)
    assert window_and_hop(timing) == (WINDOW, WINDOW / 2)
    assert window_and_hop(timing, 1.0) == (1.0, 0.5)
    assert window_and_hop(timing, hop=0.2) == (WINDOW, 0.2)
    assert window_and_hop(timing, 1.0, 3.0) == (1.0, 3.0)  # sparse: allowed
    own = (1.0, 0.25)  # e.g. an AudioClassifier built with window=1, hop=0.25
    assert window_and_hop(timing, default=own) == own and window_and_hop(timing, 1.0, default=own) == own
    assert window_and_hop(timing, 0.5, default=own) == (0.5, 0.25)
    with pytest.raises(ValueError, match="hop 0 s must be positive"):
        window_and_hop(timing, 1.0, 0.0)


def test_classify_with_a_sparse_hop_scores_only_windows_inside_the_file(tmp_path, checkpoint, capsys):
    path = write(tmp_path / "sparse.wav", 6.42)
    code, out, err = run_cli(["classify", path, "--model", checkpoint, "--window", "1", "--hop", "5", "-f", "json",
                              "-q"], capsys)
    assert code == 0, err
    row = json.loads(out)[0]
    assert [(w["start"], w["end"]) for w in row["windows"]] == [(0.0, 1.0), (5.0, 6.0)]
    assert row["duration"] == pytest.approx(6.42)


# ------------------------------------------------------------------------------------------- output paths
def _output_mistakes(tmp_path):
    folder = tmp_path / "out"
    folder.mkdir()
    a_file = tmp_path / "notes.txt"
    a_file.write_text("mine")
    clip = write(tmp_path / "clip.wav", 1.0)
    missing_model = str(tmp_path / "no-such-model")  # the model is never loaded: the paths fail first
    classify = ["classify", clip, "--model", missing_model]
    return a_file, [
        ([*classify, "-o", str(folder)], f"--output {folder}: is a folder; expected a file name"),
        ([*classify, "-o", f"{folder}/"], "is a folder; expected a file name"),
        ([*classify, "--plot", str(folder)], f"--plot {folder}: is a folder; expected a file name"),
        ([*classify, "-o", str(a_file / "results.jsonl")], f"{a_file} is a file, not a folder"),
        (["stats", clip, "-o", str(folder)], f"--output {folder}: is a folder"),
        (["evaluate", missing_model, str(tmp_path), "-o", str(folder)], f"--output {folder}: is a folder"),
        (["embed", clip, "--model", missing_model, "-o", str(a_file)], f"--output-dir {a_file}: is a file"),
        (["embed", clip, "--model", missing_model, "-o", str(a_file / "emb")], f"{a_file} is a file, not a folder"),
        ([*classify, "-o", str(tmp_path / "r.csv"), "-f", "jsonl"], "the extension says csv but --format is jsonl"),
        ([*classify, "-o", ""], "--output: an empty name; expected a file name"),
    ]


def test_output_paths_are_checked_before_the_model_loads(tmp_path, capsys):
    a_file, cases = _output_mistakes(tmp_path)
    for arguments, message in cases:
        code, _, err = run_cli(arguments, capsys)
        assert code == 2 and message in err and len(err.strip().splitlines()) == 1, (arguments, err)
    assert a_file.read_text() == "mine" and sorted(p.name for p in tmp_path.iterdir()) == ["clip.wav", "notes.txt",
                                                                                          "out"]


def _obey_file_permissions() -> None:
    """In the child: drop CAP_DAC_OVERRIDE (1) and CAP_DAC_READ_SEARCH (2), so that root obeys permissions."""
    import ctypes

    libc = ctypes.CDLL(None, use_errno=True)
    for capability in (1, 2):
        if libc.prctl(24, capability, 0, 0, 0) != 0:  # PR_CAPBSET_DROP
            raise OSError(ctypes.get_errno(), "prctl(PR_CAPBSET_DROP)")


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="Linux capabilities")
def test_an_output_without_permission_is_refused(tmp_path):
    locked = tmp_path / "locked"
    locked.mkdir(mode=0o555)
    read_only = tmp_path / "read-only.jsonl"
    read_only.write_text("")
    read_only.chmod(0o444)
    clip = write(tmp_path / "clip.wav", 1.0)
    for output, message in [(locked / "r.jsonl", f"no permission to write in the folder {locked}"),
                            (locked / "new" / "r.jsonl", f"no permission to write in the folder {locked}"),
                            (read_only, f"--output {read_only}: no permission to write this file")]:
        done = subprocess.run([sys.executable, "-m", "ast_audio", "classify", clip, "--model", str(tmp_path / "m"),
                               "-o", str(output)], capture_output=True, text=True, timeout=60,
                              preexec_fn=_obey_file_permissions)
        assert done.returncode == 2 and message in done.stderr and len(done.stderr.strip().splitlines()) == 1, done


# ------------------------------------------------------------------------------------------ lost progress
@pytest.fixture
def four_files(tmp_path):
    folder = tmp_path / "audio"
    folder.mkdir()
    for i in range(4):
        write(folder / f"{i}.wav", 1.0 + 0.25 * i, seed=i)
    return folder


def test_a_stopped_run_is_not_overwritten_without_a_word(four_files, checkpoint, tmp_path, capsys, monkeypatch):

    output = tmp_path / "out.jsonl"
    arguments = ["classify", str(four_files), "--model", checkpoint, "-o", str(output), "-q"]
    (tmp_path / ".out.jsonl.lock").write_text("12345\n")  # left by a killed run: no one holds it
    assert main(arguments) == 0  # the extension chose JSON lines
    complete = output.read_text()
    assert len([json.loads(line) for line in complete.splitlines()]) == 4
    state = tmp_path / ".out.jsonl.state.jsonl"
    assert not (tmp_path / ".out.jsonl.lock").exists() and not (tmp_path / "out.jsonl.partial").exists()
    assert state.stat().st_size < output.stat().st_size  # where each input's text lies, not the text again

    def stop_part_way():
        with monkeypatch.context() as patch:
            power_cut_after(patch, 2)
            with pytest.raises(RuntimeError, match="power cut"):
                main(arguments)
        capsys.readouterr()
        assert not (tmp_path / ".out.jsonl.lock").exists()
        return (tmp_path / "out.jsonl.partial").read_text()

    partial = stop_part_way()
    for extra, message in [([], "an earlier run stopped after 2 inputs (kept in "),
                           ([], "pass --resume to go on from there, or --overwrite to start again"),
                           (["--hop", "0.3"], "with other options (hop was default, now 0.3); pass --overwrite"),
                           (["--hop", "0.3", "--resume"], "(hop was default, now 0.3); pass --overwrite instead of "
                                                          "--resume to start over, or choose another output")]:
        code, _, err = run_cli([*arguments, *extra], capsys)
        assert code == 2 and message in err and len(err.strip().splitlines()) == 1, err  # a usage error
    assert (tmp_path / "out.jsonl.partial").read_text() == partial and output.read_text() == complete
    code, _, err = run_cli([*arguments, "--resume", "--overwrite"], capsys)
    assert code == 2 and "--resume and --overwrite exclude each other" in err

    code, _, err = run_cli([*arguments, "--resume"], capsys)
    assert code == 0 and output.read_text() == complete, err
    assert "resuming: 2 of 4 files already done, 2 to do" in err

    stop_part_way()
    code, _, err = run_cli([*arguments, "--overwrite"], capsys)
    assert code == 0 and "resuming" not in err and output.read_text() == complete
    assert not (tmp_path / "out.jsonl.partial").exists()
    assert sorted(p.name for p in tmp_path.iterdir()) == [".out.jsonl.state.jsonl", "audio", "out.jsonl"]


def test_resume_checks_the_text_it_keeps(four_files, checkpoint, tmp_path, capsys):
    """A finished output edited by hand: the inputs whose text changed are redone, the others kept."""
    output = tmp_path / "out.csv"
    arguments = ["classify", str(four_files), "--model", checkpoint, "-o", str(output), "--no-timeline", "-q"]
    assert main(arguments) == 0
    complete = output.read_bytes()
    edited = complete.replace(os.path.join(str(four_files), "2.wav").encode(),
                              os.path.join(str(four_files), "X.wav").encode())  # same length: only 2.wav's text
    assert edited != complete
    output.write_bytes(edited)
    code, _, err = run_cli([*arguments, "--resume"], capsys)
    assert code == 0 and sorted(output.read_bytes().splitlines()) == sorted(complete.splitlines()), err
    assert "resuming: 3 of 4 files already done, 1 to do" in err


# --------------------------------------------------------------------------------------------- progress
def test_progress_off_a_terminal_is_a_line_every_interval(tmp_path, checkpoint, capsys, monkeypatch):
    path = write(tmp_path / "long.wav", 20.0)
    short = write(tmp_path / "short.wav", 1.0, seed=1)
    arguments = ["classify", path, short, "--model", checkpoint, "-f", "jsonl", "--batch-size", "2"]
    monkeypatch.setenv("AST_AUDIO_PROGRESS_INTERVAL", "0")  # a line at every update
    code, _, err = run_cli(arguments, capsys)
    assert code == 0, err
    lines = [line for line in err.splitlines() if line.startswith("ast-audio classify: ") and "s of audio" in line]
    assert len(lines) >= 5 and lines[0].startswith("ast-audio classify: 0 of 2 files, ")
    assert " s of audio so far, " in lines[0]
    by_files = [line for line in lines if line.startswith("ast-audio classify: 1 of 2 files, 20.0 s of audio so far")]
    assert by_files and by_files[0].endswith(" left (by files; by audio once every file is open)")
    known = [line for line in lines if "of 21.0 s of audio" in line]  # both files open: the total
    assert known and "x real time, about " in known[-1] and known[-1].endswith(" left")
    assert lines[-1].startswith("ast-audio classify: 2 of 2 files, 21.0 of 21.0 s of audio (100%)")
    assert err.splitlines()[-1].startswith("ast-audio classify: 2 of 2 files, 0.006 h of audio in ")  # closing
    assert code == 0 and run_cli([*arguments, "-q"], capsys)[2] == ""
    monkeypatch.setenv("AST_AUDIO_PROGRESS_INTERVAL", "3600")
    code, _, err = run_cli(["-v", *arguments], capsys)
    assert [line for line in err.splitlines() if "so far" in line or "s of audio (" in line] == []
    assert f"ast-audio classify: [1/2] {path}: 20.00 s, " in err and f"[2/2] {short}: 1.00 s, 1 window, top " in err
    monkeypatch.setenv("AST_AUDIO_PROGRESS_INTERVAL", "soon")
    code, _, err = run_cli(arguments, capsys)
    assert code == 2 and "AST_AUDIO_PROGRESS_INTERVAL='soon': expected seconds" in err


def test_progress_on_a_terminal_has_a_total_and_eta(monkeypatch):
    import argparse
    import io

    from ast_audio.commands._common import Progress
    from ast_audio.inference.results import ClipResult
    from ast_audio.inference.prepare import WindowPlan

    class Terminal(io.StringIO):
        def isatty(self):
            return True

    terminal = Terminal()
    monkeypatch.setattr("sys.stderr", terminal)
    progress = Progress(argparse.Namespace(quiet=False), "classify", files=2)
    progress.plan(WindowPlan(0, "a.wav", [(0.0, 10.0), (5.0, 15.0)], 15.0))
    progress(10.0)
    assert progress.bar.total is None  # one of two files open: no total yet
    progress.file_done(ClipResult(source="missing.wav", error="missing.wav: no such file"))
    assert progress.bar.total == 15.0
    progress.bar.refresh()
    shown = terminal.getvalue().split("\r")[-1]
    assert shown.startswith("classify:  67%|") and "| 10.0/15.0 [00:00<00:00, " in shown and "1/2 files" in shown


def test_a_stopped_parquet_run_resumes_from_its_state(four_files, checkpoint, tmp_path, capsys, monkeypatch):
    """Parquet's file is not the text the run streamed: its state keeps the text, and resume rebuilds it."""
    pq = pytest.importorskip("pyarrow.parquet")

    output = tmp_path / "out.parquet"
    arguments = ["classify", str(four_files), "--model", checkpoint, "-o", str(output), "-q"]
    assert main(arguments) == 0
    complete = pq.read_table(output).to_pylist()
    power_cut_after(monkeypatch, 3)
    with pytest.raises(RuntimeError, match="power cut"):
        main(arguments)
    monkeypatch.undo()
    code, _, err = run_cli([*arguments, "--resume"], capsys)
    assert code == 0 and "resuming: 3 of 4 files already done, 1 to do" in err
    assert pq.read_table(output).to_pylist() == complete


# ------------------------------------------------------------------------------------ review 1 (command line)
def test_hop_is_bounded_below_and_every_range_message_is_exact(tmp_path, capsys):
    from ast_audio.errors import UsageError

    timing = Timing(input_frames=128)
    for window, hop, message in [(1.0, 1e-9, "hop 1e-09 s is below one frame shift: expected at least 0.01 s"),
                                 (1.0, math.inf, "hop inf s is not a finite number: expected a positive number"),
                                 (1.0, math.nan, "hop nan s is not a finite number"),
                                 (1.2950001, None, "window 1.2950001 s is outside 0.175-1.295 s")]:
        with pytest.raises(UsageError, match=message):
            window_and_hop(timing, window, hop)
    assert window_and_hop(timing, 1.0, 0.01) == (1.0, 0.01)  # one frame shift: allowed
    clip = write(tmp_path / "clip.wav", 1.0)
    code, _, err = run_cli(["classify", clip, "--model", str(tmp_path / "none"), "--hop", "1e-9"], capsys)
    assert code == 1 and "no such checkpoint" in err  # the range is the model's: checked once it is known


def test_usage_errors_exit_2_before_any_work(tmp_path, checkpoint, capsys):
    clip = write(tmp_path / "clip.wav", 1.0)
    for arguments, message in [
        (["classify", clip, "--model", checkpoint, "-f", "parquet"], "--format parquet needs --output FILE"),
        (["classify", clip, "--model", checkpoint, "--window", "1", "--hop", "1e-9"], "below one frame shift"),
        (["classify", clip, "--model", checkpoint, "--hop", "inf"], "hop inf s is not a finite number"),
        (["embed", clip, "--model", checkpoint, "--batch-size", "0", "-o", str(tmp_path / "e")], "batch_size must be"),
        (["serve", "--model", checkpoint, "--port", "99999"], "--port 99999: expected a TCP port from 0 to 65535"),
        (["train", "--train", str(tmp_path), "--set", "lr=-1", "-o", str(tmp_path / "run")], "lr must be positive"),
    ]:
        code, out, err = run_cli(arguments, capsys)
        assert code == 2 and message in err and len(err.strip().splitlines()) == 1 and out == "", (arguments, err)


@pytest.mark.skipif(not os.path.isdir("/proc/self"), reason="needs /proc")
def test_an_output_where_no_file_can_be_created_is_refused_before_the_model_loads(tmp_path, capsys):
    clip = write(tmp_path / "clip.wav", 1.0)
    missing_model = str(tmp_path / "no-model")  # loading it would fail: the check must come first
    pipe = tmp_path / "pipe.jsonl"  # a FIFO (as /dev/null is a device): the output would be renamed onto it
    os.mkfifo(pipe)
    for arguments, message in [(["classify", clip, "-o", "/proc/r.jsonl"], "--output /proc/r.jsonl: "),
                               (["classify", clip, "--plot", "/proc/p.png"], "--plot /proc/p.png: "),
                               (["embed", clip, "-o", "/proc/emb"], "--output-dir /proc/emb: "),
                               (["classify", clip, "-o", "/proc/a\nb.jsonl"], "--output /proc/a\\nb.jsonl: "),
                               (["classify", clip, "-o", str(pipe)], f"--output {pipe}: not a regular file")]:
        code, _, err = run_cli([*arguments, "--model", missing_model], capsys)
        assert code == 2 and message in err and ("the folder /proc" in err or "regular" in err), (arguments, err)
        assert len(err.strip().splitlines()) == 1 and "Traceback" not in err
    assert sorted(os.listdir(tmp_path)) == ["clip.wav", "pipe.jsonl"]  # no probe, lock or partial left


def test_resume_knows_the_model_by_its_place_and_content(tmp_path, capsys, monkeypatch):
    from ast_audio.inference.options import InferenceOptions
    from ast_audio.jobs import directory
    from ast_audio.errors import UsageError

    save_small_checkpoint(tmp_path / "tiny", labels=3)
    other = tmp_path / "elsewhere"
    save_small_checkpoint(other / "tiny", labels=3, seed=1)  # the same name, another model
    clips = [write(tmp_path / f"{i}.wav", 1.0, seed=i) for i in range(2)]
    monkeypatch.chdir(tmp_path)
    output = str(tmp_path / "out.jsonl")
    assert run_cli(["classify", clips[0], "-m", "tiny", "-o", output], capsys)[0] == 0
    code, _, err = run_cli(["classify", *clips, "-m", "./tiny", "-o", output, "--resume"], capsys)
    assert code == 0 and "1 of 2 files already done" in err  # ./tiny is tiny
    monkeypatch.chdir(other)
    code, _, err = run_cli(["classify", *clips, "-m", "tiny", "-o", output, "--resume"], capsys)
    assert code == 2 and "cannot resume" in err and f"now '{other / 'tiny'}' (content " in err, err
    # An output recorded before fingerprints (the model as typed) resumes when the name leads to the same model.
    monkeypatch.chdir(tmp_path)
    state = tmp_path / ".out.jsonl.state.jsonl"
    header, *entries = state.read_text().splitlines()
    recorded = json.loads(header)
    del recorded["options"]["model_fingerprint"]
    recorded["options"]["model"] = "tiny"
    state.write_text("\n".join([json.dumps(recorded), *entries]) + "\n")
    code, _, err = run_cli(["classify", *clips, "-m", "tiny", "-o", output, "--resume"], capsys)
    assert code == 0 and "2 of 2 files already done" in err, err
    # A Ray job's directory compares by the same rule.
    now = InferenceOptions(model="tiny").numbers()
    assert now["model"] == str(tmp_path / "tiny") and len(now["model_fingerprint"]) == 64
    directory.record_options(str(tmp_path / "ray"), {**now, "model": "./tiny", "model_fingerprint": None})
    directory.check_options(str(tmp_path / "ray"), now, directory.Contents())
    directory.record_options(str(tmp_path / "ray"), InferenceOptions(model=str(other / "tiny")).numbers())
    with pytest.raises(UsageError, match="another checkpoint, or one changed since"):
        directory.check_options(str(tmp_path / "ray"), now, directory.Contents())


def _stop_after_the_first_input(tmp_path):
    """Inputs for a job stopped part-way: a short file, then a long one scored every 10 ms (seconds of work), and
    the state file whose second line says the first is done."""
    short, long = write(tmp_path / "0.wav", 1.0), write(tmp_path / "1.wav", 30.0, seed=1)
    return [short, long], tmp_path / ".out.jsonl.state.jsonl"


def _wait_for_first_entry(state, seconds: float = 60) -> None:
    import time

    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline and not (state.exists() and len(state.read_text().splitlines()) >= 2):
        time.sleep(0.02)


def _resumes_whole(arguments, clips, tmp_path, capsys) -> None:
    assert not (tmp_path / ".out.jsonl.lock").exists() and (tmp_path / "out.jsonl.partial").exists()
    write(tmp_path / "1.wav", 1.0, seed=1)  # changed since: redone (and cheap)
    code, _, err = run_cli([*arguments, "--resume"], capsys)
    assert code == 0 and "1 of 2 files already done" in err, err
    rows = [json.loads(line) for line in (tmp_path / "out.jsonl").read_text().splitlines()]
    assert [row["path"] for row in rows] == clips and rows[1]["duration"] == 1.0


def test_sigterm_stops_a_job_as_ctrl_c_does(tmp_path, checkpoint, capsys):
    import signal

    clips, state = _stop_after_the_first_input(tmp_path)
    arguments = ["classify", *clips, "--model", checkpoint, "-o", str(tmp_path / "out.jsonl"), "--hop", "0.01", "-q"]
    job = subprocess.Popen([sys.executable, "-m", "ast_audio", *arguments], stderr=subprocess.PIPE, text=True)
    try:
        _wait_for_first_entry(state)
        job.send_signal(signal.SIGTERM)
        err = job.communicate(timeout=60)[1]
    finally:
        job.kill()
    assert job.returncode == 128 + signal.SIGTERM, err
    assert err == ("ast-audio classify: stopped by SIGTERM (an output file keeps what finished: rerun with --resume "
                   "to go on)\n")
    _resumes_whole(arguments, clips, tmp_path, capsys)


def test_sighup_stops_a_job_and_main_gives_back_the_handlers(tmp_path, checkpoint, capsys):
    import signal
    import threading

    clips, state = _stop_after_the_first_input(tmp_path)
    arguments = ["classify", *clips, "--model", checkpoint, "-o", str(tmp_path / "out.jsonl"), "--hop", "0.01", "-q"]
    before = signal.getsignal(signal.SIGHUP), signal.getsignal(signal.SIGTERM)
    lock = tmp_path / ".out.jsonl.lock"

    def hang_up_once_the_first_input_is_done() -> None:
        _wait_for_first_entry(state)
        if lock.exists():  # the job runs (the long file has seconds of work left): else SIGHUP would end pytest
            os.kill(os.getpid(), signal.SIGHUP)

    hang_up = threading.Thread(target=hang_up_once_the_first_input_is_done)
    hang_up.start()
    code, _, err = run_cli(arguments, capsys)
    hang_up.join()
    assert code == 128 + signal.SIGHUP and err.startswith("ast-audio classify: stopped by SIGHUP"), err
    assert (signal.getsignal(signal.SIGHUP), signal.getsignal(signal.SIGTERM)) == before
    _resumes_whole(arguments, clips, tmp_path, capsys)


def test_names_with_line_ends_stay_on_one_line_in_json_and_logs(tmp_path, checkpoint, capsys):
    from ast_audio.jobs.writers import json_text

    assert json_text({"path": "a\u2028b\u2029c\x85d\udcffé"}) == '{"path": "a\\u2028b\\u2029c\\u0085d\\udcffé"}'
    names = ["a\u2028b.wav", "c\u2029d\x85.wav", "new\nline.wav"]
    clips = [write(tmp_path / name, 1.0) for name in names]
    output = tmp_path / "out.jsonl"
    code, _, err = run_cli(["-v", "classify", *clips, "--model", checkpoint, "-o", str(output)], capsys)
    assert code == 0
    rows = [json.loads(line) for line in output.read_text(encoding="utf-8").splitlines()]  # splits at U+2028 too
    assert [row["path"] for row in rows] == clips
    assert all(line.startswith("ast-audio classify: ") for line in err.splitlines()), err
    assert f"{tmp_path}/new\\nline.wav: 1.00 s, 1 window, top " in err and f"{tmp_path}/a\\u2028b.wav: " in err


def test_window_times_are_written_at_full_precision(tmp_path, checkpoint, capsys):
    import csv as csv_module

    clip = write(tmp_path / "clip.wav", 2.0)
    starts = [i * 0.1275 for i in range(3)]  # 0.1275 and 0.255 + 0.1275 = 0.3825: more than 3 decimals
    flags = ["--model", checkpoint, "--window", "1", "--hop", "0.1275"]
    assert run_cli(["classify", clip, *flags, "-o", str(tmp_path / "r.jsonl")], capsys)[0] == 0
    windows = json.loads((tmp_path / "r.jsonl").read_text())["windows"]
    assert [w["start"] for w in windows[:3]] == starts and windows[1]["end"] == 1.1275
    assert run_cli(["classify", clip, *flags, "-o", str(tmp_path / "r.csv")], capsys)[0] == 0
    rows = list(csv_module.DictReader(open(tmp_path / "r.csv")))
    assert {"0.1275", "0.3825", "1.1275"} <= {row["start"] for row in rows} | {row["end"] for row in rows}
    assert run_cli(["embed", clip, *flags, "-o", str(tmp_path / "e")], capsys)[0] == 0
    index = json.loads((tmp_path / "e" / "index.jsonl").read_text())
    assert [start for start, _ in index["windows"][:3]] == starts


def test_the_pipeline_checks_a_sampling_rate_and_takes_batch_size_per_call(checkpoint):
    from ast_audio import pipeline
    from ast_audio.errors import AudioError

    classify = pipeline(model=checkpoint)
    samples = (0.1 * np.random.default_rng(0).standard_normal(RATE)).astype(np.float32)
    for rate in (0, -5, math.nan):
        with pytest.raises(AudioError, match=f"sampling_rate {rate!r}: expected the rate of the samples in Hz, a "
                                             "positive number such as 16000"):
            classify({"array": samples, "sampling_rate": rate})
    batched = classify([samples, samples], batch_size=2, sampling_rate=RATE)
    assert batched == classify([samples, samples], sampling_rate=RATE) and len(batched) == 2
    with pytest.raises(ValueError, match="batch_size must be at least 1, got 0"):
        classify(samples, batch_size=0, sampling_rate=RATE)


def test_the_one_class_refusal_says_what_gives_a_second_class(tmp_path):
    from ast_audio.training.data import Clip, DataError, LabelSpace, check_classes

    labels = LabelSpace(["dog", "cat"], ["dog", "cat"])
    one = [Clip("a.wav", [0]), Clip("b.wav", [0])]
    for source, hint in [(str(tmp_path), "(a folder: one sub-folder per class)"),
                         ("train.csv", "(a CSV: rows path,label[,label...] naming at least two labels)"),
                         ("train.json", "(a manifest: clips whose 'labels' name at least two classes)")]:
        with pytest.raises(DataError, match=f"only the class 'dog'; .*{re.escape(hint)}"):
            check_classes(one, labels, source)


def test_a_model_fingerprint_covers_what_the_loader_reads(tmp_path):
    from ast_audio.checkpoints.identity import model_fingerprint

    folder = tmp_path / "m"
    folder.mkdir()
    (folder / "config.json").write_text("{}")
    (folder / "model.safetensors").write_bytes(b"weights")
    first = model_fingerprint(str(folder))
    (folder / "last.pt").write_bytes(b"optimizer state")  # training's files and an export read by another backend
    (folder / "model.onnx").write_bytes(b"onnx")
    assert model_fingerprint(str(folder)) == first != model_fingerprint(str(folder), "model.onnx")
    (folder / "model.safetensors").write_bytes(b"retrained")
    assert model_fingerprint(str(folder)) != first
    (folder / "model.safetensors").unlink()  # sharded: the index and every shard it names
    (folder / "model.safetensors.index.json").write_text(json.dumps({"weight_map": {"a": "s1.safetensors"}}))
    (folder / "s1.safetensors").write_bytes(b"shard")
    sharded = model_fingerprint(str(folder))
    (folder / "s1.safetensors").write_bytes(b"shard, retrained")
    assert model_fingerprint(str(folder)) != sharded
    assert model_fingerprint(str(tmp_path / "missing")) is None
