"""Time-stamped annotations: Raven, Audacity and CSV/TSV files with odd but valid content read, bad rows refused
naming the file and line, annotations matched to audio files by name."""

from __future__ import annotations

from pathlib import Path

import pytest

from ast_audio.answers.annotations import (
    annotation_format,
    match_annotations,
    name_stem,
    read_annotation_file,
    read_csv_annotations,
)
from ast_audio.answers.events import Event
from ast_audio.answers.formats import AnnotationError

RAVEN = (
    "Selection\tView\tChannel\tBegin Time (s)\tEnd Time (s)\tLow Freq (Hz)\tHigh Freq (Hz)\tDelta Time (s)"
    "\tSpecies\tNotes\n"
    "2\tSpectrogram 1\t1\t5.0\t6.5\t1000\t4000\t1.5\tWren\tfaint\n"
    "1\tSpectrogram 1\t1\t1.0\t3.0\t500\t3000\t2.0\tRobin\t\n"
    "1\tWaveform 1\t1\t1.0\t3.0\t500\t3000\t2.0\tRobin\t\n"  # Raven's second view of selection 1
    "3\tSpectrogram 1\t1\t2.0\t4.0\t500\t3000\t2.0\tRobin\toverlaps 1\n"
)
AUDACITY = "4.5\t5.0\tdog\n\\\t200.0\t3000.0\n0.5\t2.25\tcar horn\n1.0\t1.0\tclick\n"
DCASE = (
    "filename\tonset\toffset\tevent_label\n"
    "b.wav\t3.0\t4.0\tSpeech\n"
    "a.wav\t1.5\t2.5\tDog\n"
    "a.wav\t0.5\t2.0\tSpeech\n"
    "c.wav\t\t\t\n"  # a clip annotated with no events
)


def write(folder: Path, name: str, text: str) -> str:
    path = folder / name
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(text.encode("utf-8"))
    return str(path)


def test_raven_with_extra_columns_views_and_overlaps(tmp_path: Path) -> None:
    path = write(tmp_path, "rec01.Table.1.selections.txt", RAVEN)
    assert annotation_format(RAVEN) == "raven"
    events = read_annotation_file(path)[None]
    assert events == [Event("Robin", 1.0, 3.0), Event("Robin", 2.0, 4.0), Event("Wren", 5.0, 6.5)]


def test_audacity_with_frequency_lines_unsorted_rows_and_point_labels(tmp_path: Path) -> None:
    path = write(tmp_path, "rec02.txt", AUDACITY)
    assert annotation_format(AUDACITY) == "audacity"
    assert read_annotation_file(path) == {
        None: [Event("car horn", 0.5, 2.25), Event("click", 1.0, 1.0), Event("dog", 4.5, 5.0)]
    }


def test_dcase_tsv_unsorted_with_an_empty_clip() -> None:
    assert annotation_format(DCASE) == "csv"
    assert read_csv_annotations(DCASE, "meta.tsv") == {
        "a.wav": [Event("Speech", 0.5, 2.0), Event("Dog", 1.5, 2.5)],
        "b.wav": [Event("Speech", 3.0, 4.0)],
        "c.wav": [],
    }


@pytest.mark.parametrize(
    "text",
    [
        "File,Start (s),End (s),Label\nx.wav,1,2,dog\n",
        "\ufeffaudio_filename;event_onset;event_offset;class\nx.wav;1;2;dog\n",
        'Filename,Start_Time,End_Time,Event Label,confidence\n"x.wav",1.0,2.0,"dog",0.9\r\n',
        "path\tbegin\tend\tspecies\nx.wav\t1\t2\tdog\n\n",
    ],
)
def test_csv_header_variants(text: str) -> None:
    assert read_csv_annotations(text, "v.csv") == {"x.wav": [Event("dog", 1.0, 2.0)]}


def test_csv_without_a_file_column_belongs_to_the_file_it_is_named_after(tmp_path: Path) -> None:
    path = write(tmp_path, "notes/Rec03.csv", "onset,offset,label\n2,3,bird\n")
    matched = match_annotations([path], ["/audio/rec03.WAV", "/audio/rec04.wav"])
    assert matched.events == {"/audio/rec03.WAV": [Event("bird", 2.0, 3.0)]}
    assert matched.sources == {"/audio/rec03.WAV": (path,)}


@pytest.mark.parametrize(
    ("name", "text", "expected"),
    [
        ("bad.csv", "filename,onset,offset,event_label\na.wav,1,2,dog\na.wav,one,2,dog\n",
         r"bad.csv line 3: onset 'one' must be a number of seconds >= 0"),
        ("bad.csv", "filename,onset,offset,event_label\n\na.wav,3,2,dog\n",
         r"bad.csv line 3: offset 2 is before onset 3"),
        ("bad.csv", "filename,onset,offset,event_label\na.wav,-1,2,dog\n", r"bad.csv line 2: onset '-1'"),
        ("bad.csv", "filename,onset,offset,event_label\na.wav,1,2,\n", r"bad.csv line 2: the event label is empty"),
        ("bad.csv", "filename,onset,offset,event_label\na.wav,1,2,dog,extra\n", r"bad.csv line 2: 5 fields"),
        ("bad.csv", "filename,begin_sample,offset,label\n", r"bad.csv line 1: no onset column"),
        ("bad.txt", "1.0\t2.0\tdog\n3.0\tx\tcat\n", r"bad.txt line 2: end 'x' is not a number"),
        ("bad.txt", "1.0\t2.0\n", r"bad.txt line 1: expected start<TAB>end<TAB>label"),
        ("bad.txt", "Selection\tBegin Time (s)\tEnd Time (s)\tAnnotation\n1\t4\t3\tdog\n",
         r"bad.txt line 2: End Time \(s\) 3 is before Begin Time \(s\) 4"),
    ],
)
def test_bad_annotation_files_are_refused_naming_file_and_line(
    tmp_path: Path, name: str, text: str, expected: str
) -> None:
    path = write(tmp_path, name, text)
    with pytest.raises(AnnotationError, match=expected) as caught:
        read_annotation_file(path)
    assert str(caught.value).startswith(path)
    with pytest.raises(AnnotationError, match="cannot read annotations"):
        read_annotation_file(tmp_path / "missing.csv")


@pytest.mark.parametrize(
    ("name", "text"),
    [
        ("short.txt", ""),  # Audacity's export of an empty label track: 0 bytes
        ("short.csv", "\n\n"),
        ("short.Table.1.selections.txt", "Selection\tView\tChannel\tBegin Time (s)\tEnd Time (s)\tAnnotation\n"),
        ("short.csv", "onset,offset,event_label\n"),
        ("short.tsv", "filename\tonset\toffset\tevent_label\n"),
    ],
)
def test_an_annotation_file_without_events_marks_its_audio_annotated_with_none(
    tmp_path: Path, name: str, text: str
) -> None:
    path = write(tmp_path, name, text)
    assert read_annotation_file(path) == {None: []}
    matched = match_annotations([path], ["/audio/short.wav", "/audio/long.wav"])
    assert matched.events == {"/audio/short.wav": []} and matched.sources == {"/audio/short.wav": (path,)}
    assert matched.unannotated(["/audio/short.wav", "/audio/long.wav"]) == ["/audio/long.wav"]
    with pytest.raises(AnnotationError, match="empty, no header line"):
        read_csv_annotations("\n", "x.csv")  # the CSV reader itself still wants a header


def test_matching_by_stem_case_paths_unknown_labels_and_unmatched(tmp_path: Path) -> None:
    audio = ["/data/site1/A.wav", "/data/site1/b.flac", "/data/site2/b.flac", "/data/c.wav", "/data/d.wav"]
    meta = write(tmp_path, "meta.tsv", DCASE.replace("b.wav", "site2/b.wav") + "e.wav\t1\t2\tDog\n")
    raven = write(tmp_path, "D.Table.1.selections.txt", RAVEN)
    matched = match_annotations([meta, raven], audio, labels=["Dog", "Speech", "Robin"])
    assert matched.events == {
        "/data/site1/A.wav": [Event("Speech", 0.5, 2.0), Event("Dog", 1.5, 2.5)],
        "/data/site2/b.flac": [Event("Speech", 3.0, 4.0)],
        "/data/c.wav": [],
        "/data/d.wav": [Event("Robin", 1.0, 3.0), Event("Robin", 2.0, 4.0), Event("Wren", 5.0, 6.5)],
    }
    assert matched.unmatched == (f"{meta}: e.wav",)
    # An annotation file named after no audio file is reported by its name once.
    lone = write(tmp_path, "nomatch.csv", "onset,offset,label\n1,2,Dog\n")
    assert match_annotations([lone], audio).unmatched == (lone,)
    assert matched.unknown_labels == {"Wren": 1}
    assert matched.unannotated(audio) == ["/data/site1/b.flac"]
    # A bare name that fits two audio files is refused, naming the annotation file and the candidates.
    ambiguous = write(tmp_path, "amb.csv", "filename,onset,offset,event_label\nb.wav,1,2,x\n")
    with pytest.raises(AnnotationError, match=r"amb.csv: 'b.wav' fits several audio files"):
        match_annotations([ambiguous], audio)


def test_raven_table_over_several_files_and_windows_paths(tmp_path: Path) -> None:
    text = (
        "Selection\tView\tChannel\tBegin Time (s)\tEnd Time (s)\tBegin Path\tFile Offset (s)\tAnnotation\n"
        "1\tSpectrogram 1\t1\t1.0\t2.0\tC:\\field\\r1.wav\t1.0\tfrog\n"
        "2\tSpectrogram 1\t1\t61.0\t62.5\tC:\\field\\r2.wav\t1.0\tfrog\n"
    )
    table = write(tmp_path, "all.txt", text)
    matched = match_annotations([table], ["r1.wav", "r2.wav"])
    assert matched.events == {"r1.wav": [Event("frog", 1.0, 2.0)], "r2.wav": [Event("frog", 1.0, 2.5)]}
    assert name_stem("C:\\field\\R2.Table.1.selections.txt") == "r2"
