"""Job I/O beside the engine: the record of each output format (records), renderers (writers), locked and
resumable output files (output), a Ray job's output directory (directory) and pictures of results (plot).

Arrows point down: jobs use the engine's `ClipResult`; the engine never imports jobs.
"""
