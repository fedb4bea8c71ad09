"""`edgeopt demo`: the real-time before/after demo.

Held-out RAVDESS speech (or a microphone) is streamed at real-time pace through the streaming log-mel
front end; every 1/30 s the latest 2.56 s window goes to two models side by side, the float baseline in
eager PyTorch and the optimized model on edgeopt's int8 kernels, each in its own process with its own
threads. The page (or the terminal view, or a headless summary) shows what each costs and how well each
does, live.

Modules: `stream` (audio -> windows, ground truth), `models` (the two models; the optimized recipe),
`isa` (the AVX2 path), `engine` (the processes and shared window ring), `stats` (the figures),
`server` + `page/` (the web page), `tui` (the terminal view), `cli` (the command), `mnist` (the older
MNIST Linear-layer demo, `edgeopt demo --task mnist`).
"""
