"""Answers from scores: sound events with onset and offset (`events`), the classes a user asked for
(`selection`, with the AudioSet hierarchy in `ontology`), and the files of the tools people use (`formats`).

Pure functions over arrays and text: the engine, the service and Ray workers call them on the scores they
compute, so every front end gives the same answers.
"""
