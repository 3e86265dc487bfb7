"""Events as Raven selection tables, Audacity label tracks, WebVTT and SRT; Raven and Audacity read back."""

from __future__ import annotations

import re
from pathlib import Path

import pytest

from ast_audio.answers.events import Event
from ast_audio.answers.formats import (
    AnnotationError,
    FileEvents,
    read_audacity,
    read_raven,
    to_audacity,
    to_raven,
    to_raven_files,
    to_srt,
    to_webvtt,
)

EVENTS = [
    Event("Dog", 12.5, 14.25, 0.912345, 0.8),
    Event("Speech", 0.0, 30.0, 0.7, 0.55),  # overlaps the others
    Event("Male speech, man speaking", 3661.001, 3662.5, 0.51, 0.5),  # past an hour; a comma in the name
    Event("Siren", 12.5, 13.0, 0.999, 0.9),  # starts with Dog
]


def same(parsed: list[Event], expected: list[Event], scores: bool = True) -> None:
    ordered = sorted(expected, key=lambda e: (e.start, e.end, e.label))
    assert [e.label for e in parsed] == [e.label for e in ordered]
    for got, want in zip(parsed, ordered):
        assert got.start == pytest.approx(want.start, abs=1e-6) and got.end == pytest.approx(want.end, abs=1e-6)
        if scores:
            assert got.score == pytest.approx(want.score, abs=1e-6) and got.mean == pytest.approx(want.mean, abs=1e-6)


def test_raven_table_of_one_file_round_trips() -> None:
    text = to_raven(EVENTS, high_freq=8000)
    lines = text.split("\n")
    assert lines[0].split("\t") == [
        "Selection", "View", "Channel", "Begin Time (s)", "End Time (s)", "Low Freq (Hz)", "High Freq (Hz)",
        "Annotation", "Score", "Mean Score",
    ]
    first = ["1", "Spectrogram 1", "1", "0.000000", "30.000000", "0.0", "8000.0", "Speech", "0.700000", "0.550000"]
    assert lines[1].split("\t") == first
    assert text.endswith("\n") and len(lines) == len(EVENTS) + 2
    parsed = read_raven(text, "dog.selections.txt")
    assert list(parsed) == [None]
    same(parsed[None], EVENTS)


def test_raven_table_of_several_files_follows_the_file_sequence() -> None:
    files = [
        FileEvents("recordings/a/one.wav", 40.0, EVENTS[:2]),
        FileEvents("recordings/b/empty.wav", 10.0, []),
        FileEvents("recordings/b/two.wav", 20.0, [Event("Bark", 1.0, 2.0, 0.9, 0.8)]),
    ]
    text = to_raven_files(files)
    header = text.split("\n")[0].split("\t")
    assert header[7:10] == ["Begin Path", "Begin File", "File Offset (s)"]
    last = text.rstrip("\n").split("\n")[-1].split("\t")
    assert last[0] == "3" and last[3] == "51.000000" and last[4] == "52.000000"  # 40 + 10 + 1 s into the sequence
    assert last[7:10] == ["recordings/b/two.wav", "two.wav", "1.000000"]
    parsed = read_raven(text, "all.txt")
    assert list(parsed) == ["recordings/a/one.wav", "recordings/b/two.wav"]
    same(parsed["recordings/a/one.wav"], EVENTS[:2])
    same(parsed["recordings/b/two.wav"], [Event("Bark", 1.0, 2.0, 0.9, 0.8)])
    with pytest.raises(AnnotationError, match="x.wav: duration nan must be"):
        to_raven_files([FileEvents("x.wav", float("nan"), [])])


def test_raven_tables_as_raven_writes_them() -> None:
    # CRLF line ends, a byte-order mark, a label column named Species, extra columns, rows out of order, and
    # the two rows (waveform and spectrogram views) Raven writes for one selection.
    text = (
        "\ufeffSelection\tView\tChannel\tBegin Time (s)\tEnd Time (s)\tLow Freq (Hz)\tHigh Freq (Hz)\tDelta Time (s)"
        "\tSpecies\r\n"
        "2\tWaveform 1\t1\t5.5\t6.25\t0\t11025\t0.75\tEATO\r\n"
        "2\tSpectrogram 1\t1\t5.5\t6.25\t0\t11025\t0.75\tEATO\r\n"
        "1\tSpectrogram 1\t1\t1.0\t1.5\t2000\t4000\t0.5\tNOCA\r\n"
        "\r\n"
    )
    parsed = read_raven(text, "field.txt")
    assert parsed == {None: [Event("NOCA", 1.0, 1.5), Event("EATO", 5.5, 6.25)]}
    assert read_raven(text, "field.txt", label_column="Channel")[None][0].label == "1"


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("", r"t.txt: empty"),
        ("Selection\tBegin Time (s)\n", r"t.txt line 1: not a Raven selection table \(no 'End Time \(s\)' column\)"),
        ("Begin Time (s)\tEnd Time (s)\n1\t2\n", r"t.txt line 1: no label column"),
        ("Begin Time (s)\tEnd Time (s)\tAnnotation\n1\tabc\tdog\n", r"t.txt line 2: End Time \(s\) 'abc' is not a"),
        ("Begin Time (s)\tEnd Time (s)\tAnnotation\n\n3\t2\tdog\n", r"t.txt line 3: End Time \(s\) 2 is before Begin"),
        ("Begin Time (s)\tEnd Time (s)\tAnnotation\n1\t2\t\n", r"t.txt line 2: the label \(Annotation\) is empty"),
        ("Begin Time (s)\tEnd Time (s)\tAnnotation\n1\t2\tdog\tx\n", r"t.txt line 2: 4 fields where the header has 3"),
        ("Begin Time (s)\tEnd Time (s)\tAnnotation\tScore\n1\t2\tdog\thigh\n", r"t.txt line 2: Score 'high' is not a"),
    ],
)
def test_raven_errors_name_the_file_and_line(text: str, message: str) -> None:
    with pytest.raises(AnnotationError, match=message) as caught:
        read_raven(text, "t.txt")
    assert "\n" not in str(caught.value)


def test_raven_with_a_named_label_column_that_is_missing() -> None:
    with pytest.raises(AnnotationError, match=r"t.txt line 1: no column 'Call' \(the columns are Begin Time"):
        read_raven("Begin Time (s)\tEnd Time (s)\tAnnotation\n", "t.txt", label_column="Call")


def test_audacity_label_track_round_trips_and_reads_frequency_lines() -> None:
    text = to_audacity(EVENTS)
    assert text.split("\n")[0] == "0.000000\t30.000000\tSpeech"
    same(read_audacity(text, "labels.txt"), EVENTS, scores=False)
    extended = "1.5\t2.5\tcall\r\n\\\t200.0\t3000.0\r\n0.5\t0.5\tpoint\n\t100\t200\n"
    assert read_audacity(extended) == [Event("point", 0.5, 0.5), Event("call", 1.5, 2.5)]


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("1.0\t2.0\n", r"a.txt line 1: expected start<TAB>end<TAB>label"),
        ("1.0\t2.0\tok\n1,5\t2\tbad\n", r"a.txt line 2: start '1,5' is not a number"),
        ("3\t2\tx\n", r"a.txt line 1: end 2 is before start 3"),
        ("1\t2\t \n", r"a.txt line 1: the label is empty"),
        ("1\t2\tx\n\\\t100\n", r"a.txt line 2: a frequency line must be"),
        ("1\t2\tx\n\\\tlow\t200\n", r"a.txt line 2: low frequency 'low' is not a number"),
    ],
)
def test_audacity_errors_name_the_file_and_line(text: str, message: str) -> None:
    with pytest.raises(AnnotationError, match=message):
        read_audacity(text, "a.txt")


@pytest.mark.filterwarnings("ignore::DeprecationWarning", "ignore::FutureWarning")
def test_raven_and_audacity_read_back_by_crowsetta(tmp_path: Path) -> None:
    crowsetta = pytest.importorskip("crowsetta")
    raven_file = tmp_path / "table.selections.txt"
    raven_file.write_text(to_raven(EVENTS), encoding="utf-8")
    boxes = crowsetta.formats.bbox.Raven.from_file(raven_file).to_bbox()
    ordered = sorted(EVENTS, key=lambda e: (e.start, e.end, e.label))
    assert [box.label for box in boxes] == [event.label for event in ordered]
    times = [time for box in boxes for time in (box.onset, box.offset)]
    assert times == pytest.approx([time for e in ordered for time in (e.start, e.end)], abs=1e-6)
    labels_file = tmp_path / "labels.txt"
    labels_file.write_text(to_audacity(EVENTS), encoding="utf-8")
    seq = crowsetta.formats.seq.AudSeq.from_file(labels_file).to_seq()
    assert list(seq.labels) == [event.label for event in ordered]
    assert list(seq.onsets_s) == pytest.approx([e.start for e in ordered], abs=1e-6)
    assert list(seq.offsets_s) == pytest.approx([e.end for e in ordered], abs=1e-6)


@pytest.mark.filterwarnings("ignore::DeprecationWarning", "ignore::FutureWarning")
def test_real_raven_and_audacity_exports_read_as_crowsetta_reads_them() -> None:
    crowsetta = pytest.importorskip("crowsetta")
    raven_path = crowsetta.example("Recording1", return_path=True)  # a table exported by Raven (CRLF)
    mine = read_raven(Path(raven_path).read_text(encoding="utf-8"), str(raven_path))[None]
    theirs = crowsetta.formats.bbox.Raven.from_file(raven_path, annot_col="Species").to_bbox()
    assert [(e.label, e.start, e.end) for e in mine] == [(b.label, b.onset, b.offset) for b in theirs]
    bbox_path = crowsetta.example("spinetail.txt", return_path=True)  # Audacity's extended format
    mine = read_audacity(Path(bbox_path).read_text(encoding="utf-8"), str(bbox_path))
    theirs = crowsetta.formats.bbox.AudBBox.from_file(bbox_path).to_bbox()
    key = sorted((b.label, b.onset, b.offset) for b in theirs)
    assert sorted((e.label, e.start, e.end) for e in mine) == key


# A strict reading of the WebVTT file syntax (W3C WebVTT, "WebVTT file body", "WebVTT cue timings" and
# "cue text"): signature line, blank line, blocks separated by blank lines, each an optional identifier (no
# "-->"), a timing line (timestamps [hh:]mm:ss.ttt with minutes and seconds 00-59, hours two or more digits),
# and text lines without "-->" whose "&" starts a character reference and with no "<" (we write no tags).
VTT_TIMESTAMP = r"(?:(\d{2,}):)?([0-5]\d):([0-5]\d)\.(\d{3})"
VTT_TIMING = re.compile(rf"^{VTT_TIMESTAMP}[ \t]+-->[ \t]+{VTT_TIMESTAMP}(?:[ \t]+.*)?$")
REFERENCE = re.compile(r"&(amp|lt|gt|lrm|rlm|nbsp|#\d+|#x[0-9a-fA-F]+);")


def vtt_seconds(hours: str | None, minutes: str, seconds: str, millis: str) -> float:
    return int(hours or 0) * 3600 + int(minutes) * 60 + int(seconds) + int(millis) / 1000


def check_webvtt(text: str) -> list[tuple[float, float, str]]:
    assert "\r" not in text and "\0" not in text
    signature = re.match(r"^WEBVTT(?:[ \t][^\n]*)?\n", text)
    assert signature, "the signature line"
    body = text[signature.end() :]
    if not body:
        return []
    assert body.startswith("\n"), "a blank line after the signature"
    cues, previous_start = [], 0.0
    for block in body[1:].rstrip("\n").split("\n\n"):
        lines = block.split("\n")
        if "-->" not in lines[0]:
            assert lines[0].strip() and "-->" not in lines[0]
            lines = lines[1:]
        match = VTT_TIMING.match(lines[0])
        assert match, f"timing line {lines[0]!r}"
        start, end = vtt_seconds(*match.groups()[:4]), vtt_seconds(*match.groups()[4:])
        assert end > start and start >= previous_start, "cues in order, each ending after it starts"
        previous_start = start
        assert len(lines) >= 2 and all(line and "-->" not in line and "<" not in line for line in lines[1:])
        for line in lines[1:]:
            assert line.count("&") == len(REFERENCE.findall(line)), f"bare & in {line!r}"
        cues.append((start, end, "\n".join(lines[1:])))
    return cues


def test_webvtt_is_valid_and_carries_every_event() -> None:
    events = [*EVENTS, Event("Rock & <roll>", 5.0, 5.0004, 0.6, 0.6)]
    cues = check_webvtt(to_webvtt(events))
    assert len(cues) == len(events)
    ordered = sorted(events, key=lambda e: (e.start, e.end, e.label))
    for (start, end, text), event in zip(cues, ordered):
        assert start == pytest.approx(event.start, abs=5e-4)
        assert end == pytest.approx(max(event.end, start + 0.001), abs=5e-4)
    assert cues[1][2] == "Rock &amp; &lt;roll&gt; 0.60"
    assert "01:01:01.001 --> 01:01:02.500" in to_webvtt(events)
    assert check_webvtt(to_webvtt([])) == []
    assert to_webvtt([]) == "WEBVTT\n"


def test_srt_numbers_cues_with_comma_milliseconds() -> None:
    text = to_srt(EVENTS)
    blocks = text.rstrip("\n").split("\n\n")
    assert len(blocks) == len(EVENTS)
    timing = re.compile(r"^(\d{2}):([0-5]\d):([0-5]\d),(\d{3}) --> (\d{2}):([0-5]\d):([0-5]\d),(\d{3})$")
    for number, block in enumerate(blocks, 1):
        lines = block.split("\n")
        assert lines[0] == str(number) and timing.match(lines[1]) and lines[2]
    assert blocks[0] == "1\n00:00:00,000 --> 00:00:30,000\nSpeech 0.70"
    assert blocks[-1] == "4\n01:01:01,001 --> 01:01:02,500\nMale speech, man speaking 0.51"
    assert to_srt([]) == ""
