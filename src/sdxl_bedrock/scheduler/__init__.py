"""Between the wires and the engine: the queue and the engine loop (batcher.py), which rows a tick takes
(planner.py), the one failure policy every stage of a row's life runs under (stages.py), the interfaces the
loop reads of the engine's rows (types.py), and A1111's stop signals (stops.py). Nothing here imports torch
at module load."""
