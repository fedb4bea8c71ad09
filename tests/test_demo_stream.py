"""The demo's stream: windows equal the offline front end, ground truth, the shared window ring, statistics."""
import multiprocessing as mp

import numpy as np
import pytest
import torch

from edgeopt.data import LogMel, resample
from edgeopt.demo.engine import WindowRing
from edgeopt.demo.stats import DemoStats
from edgeopt.demo.stream import COVERAGE, Playlist, Utterance, live_ticks, ticks
from edgeopt.training.tasks import RAVDESS_FEATURES

F = RAVDESS_FEATURES
SR = F.logmel.sample_rate
WINDOW = F.logmel.num_samples(F.frames)  # samples behind one window


def _offline_window(audio: np.ndarray, stop: int) -> np.ndarray:
    """The normalised last `frames` log-mel frames of audio[:stop], computed offline in one go."""
    logmel = LogMel(F.logmel)(torch.from_numpy(audio[:stop].astype(np.float32))).numpy()
    return (logmel[:, -F.frames:] - F.mean) / F.std


@pytest.fixture(scope="module")
def playlist():
    return Playlist.ravdess(limit=4)


def test_playlist_is_the_held_out_actors_in_a_fixed_order(playlist):
    again = Playlist.ravdess(limit=4)
    assert [u.name for u in playlist.utterances] == [u.name for u in again.utterances]
    assert all(21 <= u.actor <= 24 for u in playlist.utterances)
    assert playlist.utterances[0].start == 0
    for a, b in zip(playlist.utterances, playlist.utterances[1:]):
        assert a.stop == b.start
    for i, u in enumerate(playlist.utterances):
        s0, s1 = playlist.speech_span(i)
        assert u.start <= s0 < s1 <= u.stop
    assert playlist.utterances[-1].stop == playlist.length == playlist.samples(0, playlist.length).size


def test_streamed_windows_equal_the_offline_front_end(playlist):
    rate = 30
    got = list(ticks(playlist, rate=rate, max_seconds=4.0))
    first_full = -(-WINDOW * rate // SR)  # first tick whose audio fills a window
    assert got[0].seq == 0 and got[0].audio_time == pytest.approx(first_full * SR // rate / SR)
    assert [t.seq for t in got] == list(range(len(got)))
    np.testing.assert_allclose(np.diff([t.audio_time for t in got]), 1 / rate, atol=1 / SR)
    for tick in (got[0], got[7], got[-1]):
        stop = round(tick.audio_time * SR)
        np.testing.assert_allclose(tick.window, _offline_window(playlist.samples(0, stop), stop), rtol=1e-5, atol=1e-4)
    assert sum(t.chunk.size for t in got[1:]) == round(got[-1].audio_time * SR) - round(got[0].audio_time * SR)


def test_the_stream_repeats_and_clip_ids_count_laps(playlist):
    n = playlist.length
    audio = playlist.samples(0, n)
    assert np.array_equal(playlist.samples(n - 5, n + 5), np.concatenate([audio[-5:], audio[:5]]))
    assert np.array_equal(playlist.samples(2 * n + 7, 2 * n + 9), audio[7:9])
    u = playlist.utterances[1]
    scored = [t for t in range(u.start - WINDOW, u.stop, 1600) if playlist.truth(t, t + WINDOW) == 1]
    assert scored, "some window over sentence 1 is scored against it"
    assert playlist.truth(n + scored[0], n + scored[0] + WINDOW) == len(playlist) + 1  # the same, one lap later
    assert playlist.playing(n + u.start) == len(playlist) + 1
    assert playlist.playing(u.stop - 1) == 1


def _synthetic(speech: list[tuple[int, int]], length: int) -> Playlist:
    """Silent sentences whose speech spans (stream samples) are given."""
    bounds = [0] + [b for _, b in speech[:-1]] + [length]
    utterances = [Utterance(i % 8, f"u{i}", 21, bounds[i], bounds[i + 1]) for i in range(len(speech))]
    return Playlist(utterances, [str(i) for i in range(8)], SR,
                    load=lambda i: np.zeros(bounds[i + 1] - bounds[i], np.float32),
                    speech=lambda i, samples: (speech[i][0] - bounds[i], speech[i][1] - bounds[i]))


def test_truth_needs_most_of_one_sentence_in_the_window():
    # sentence 0: 1.5 s of speech; sentence 1: 3.5 s (longer than the 2.59 s window)
    p = _synthetic([(8000, 32000), (48000, 104000)], 120000)
    assert p.truth(0, WINDOW) == 0  # all of sentence 0 inside
    short = 24000
    cut = int(short * (1 - COVERAGE)) + 1  # just under COVERAGE of it inside
    assert p.truth(8000 + cut, 8000 + cut + WINDOW) == -1
    assert p.truth(8000 + cut - 2, 8000 + cut - 2 + WINDOW) == 0
    assert p.truth(60000, 60000 + WINDOW) == 1  # inside the long sentence: the whole window is speech
    assert p.truth(20000, 20000 + WINDOW) == -1  # half of sentence 0, a third of the window in sentence 1
    no_truth = Playlist.from_audio(np.zeros(1000, np.float32), SR)
    assert no_truth.truth(0, 500) == -1 and no_truth.playing(1010) == 1


def test_microphone_path_48k_chunks_give_the_same_windows_as_16k_files(playlist):
    """48 kHz chunks of any size -> streaming resampler -> windows; against the offline resampled audio."""
    x48 = resample(torch.from_numpy(playlist.samples(0, 5 * SR).astype(np.float64)), SR, 48000).numpy().astype(np.float32)
    rng = np.random.default_rng(0)
    cuts = np.cumsum(rng.integers(1, 2400, size=400))
    chunks = [c for c in np.split(x48, cuts[cuts < x48.size]) if c.size]
    live = list(live_ticks(iter(chunks), 48000, rate=30))
    back = resample(torch.from_numpy(x48.astype(np.float64)), 48000, SR).numpy().astype(np.float32)
    files = list(ticks(Playlist.from_audio(back, SR), rate=30, max_seconds=4.0))
    assert len(live) >= len(files) - 2
    for a, b in zip(live[: len(files) - 2], files):  # the resampler holds back its last few samples
        assert a.audio_time == pytest.approx(b.audio_time)
        np.testing.assert_allclose(a.window, b.window, rtol=1e-4, atol=2e-3)
        assert a.clip == -1


def test_window_ring_hands_over_whole_windows_and_detects_overwrites():
    ctx = mp.get_context("spawn")
    ring = WindowRing(ctx, 4, 6, slots=3, audio_len=10)
    assert ring.latest() == -1 and ring.wait_for(0, 0.01) == -1
    windows = [np.full((4, 6), i, np.float32) for i in range(5)]
    for i in range(2):
        ring.publish(i, windows[i], 10.0 + i, 100 + i, np.arange(4, dtype=np.float32) + 4 * i, playing=200 + i)
    window, audio_time, clip, playing = ring.read(1)
    assert np.array_equal(window, windows[1]) and (audio_time, clip, playing) == (11.0, 101, 201)
    assert ring.wait_for(1, 0.01) == 1
    for i in range(2, 5):
        ring.publish(i, windows[i], 10.0 + i, -1, np.zeros(0, np.float32))
    assert ring.read(1) is None  # slot 1 now holds window 4
    assert ring.read(4)[0][0, 0] == 4
    assert np.array_equal(ring.recent_audio(5), np.array([3, 4, 5, 6, 7], np.float32))  # wrapped around
    assert np.array_equal(ring.recent_audio(100), np.arange(8, dtype=np.float32)[-8:])


def _result(stats, role, seq, pred, label, start, latency, cpu, dropped=0, backlog=0, busy=False):
    probs = [0.0] * 8
    probs[pred] = 1.0
    clip = -1 if label < 0 else seq // 10
    stats.add_result(role, seq, clip, probs, start - 0.01, start, start + latency, backlog, dropped, cpu, busy=busy)


def test_statistics_latency_cpu_accuracy_drops_and_phases():
    stats = DemoStats(30, [str(i) for i in range(8)])
    stats.set_source({"kind": "files", "seconds": 10.0, "utterances": [(c % 8, f"u{c}", 21) for c in range(8)]})
    stats.start_clock()
    t = 1000.0
    for seq in range(60):  # 2 s quiet: baseline 10 ms at 60% CPU, optimized 2 ms at 12%; clip c = seq // 10
        label = (seq // 10) % 8 if seq % 10 < 8 else -1  # 8 scored windows per clip
        _result(stats, "baseline", seq, label if seq % 4 else 7 - label % 8, label, t + seq / 30, 0.010, 0.6 * seq / 30)
        _result(stats, "optimized", seq, label if label >= 0 else 0, label, t + seq / 30, 0.002, 0.12 * seq / 30)
    for seq in range(60, 90):  # 1 s with one core busy: the baseline drops 5 windows
        _result(stats, "baseline", seq, 0, -1, t + seq / 30, 0.050, 0.6 * seq / 30, dropped=5, backlog=15, busy=True)
        _result(stats, "optimized", seq, 0, -1, t + seq / 30, 0.003, 0.12 * seq / 30, busy=True)
    s = stats.summary()
    quiet, busy = s["phases"]["quiet"], s["phases"]["busy"]
    assert quiet["baseline"]["latency_p50_ms"] == pytest.approx(10.0)
    assert quiet["optimized"]["cpu_percent"] == pytest.approx(12.0)
    assert quiet["ratio"]["cpu"] == pytest.approx(0.2)
    assert quiet["ratio"]["latency"] == pytest.approx(5.0)
    assert quiet["baseline"]["dropped"] == 0 and busy["baseline"]["dropped"] == 5
    assert busy["baseline"]["backlog_max"] == 15 and busy["optimized"]["latency_p50_ms"] == pytest.approx(3.0)
    scored = [seq for seq in range(60) if seq % 10 < 8]
    base_correct = sum(1 for seq in scored if seq % 4)
    assert s["models"]["baseline"]["scored"] == len(scored) == s["paired"]["windows"]
    assert s["paired"]["baseline_accuracy"] == pytest.approx(base_correct / len(scored))
    assert s["paired"]["optimized_accuracy"] == 1.0
    assert s["models"]["optimized"]["clips"] == 6 and s["models"]["optimized"]["clip_accuracy"] == 1.0
    live = stats.live(playing=3)
    assert live["now_playing"]["emotion"] == "3" and live["now_playing"]["index"] == 4
    assert live["models"]["baseline"]["dropped"] == 5
    assert live["models"]["optimized"]["latency_p50_ms"] == pytest.approx(2.0)  # 60 calls of 2 ms, 30 of 3 ms
