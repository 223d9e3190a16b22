"""The browser page of ``fairstream serve``, run in headless Chromium.

Chromium's fake capture device plays a golden utterance as the microphone; the page (opened
with ``?autostart=1&seconds=N``) streams it through its AudioWorklet and WebSocket to a server
on a free port, stops after N seconds of audio, and writes the transcript into
``<output id="result">``. The test reads it over the DevTools protocol (Chromium's
``--remote-debugging-port``, spoken with the ``websockets`` client the server already needs).
"""

from __future__ import annotations

import json
import re
import subprocess
import time
import urllib.request
from pathlib import Path
from typing import Any

import numpy as np
import pytest

pytest.importorskip("websockets")
pytest.importorskip("prometheus_client")

import soundfile as sf  # noqa: E402
from test_audit_browser import _chromium  # noqa: E402
from test_serve import GOLDEN, NO_ENDPOINT, _feed_ragged, running  # noqa: E402
from websockets.sync.client import connect  # noqa: E402

from fairstream.inference import LoadedModel, decode_cuts, load_transducer  # noqa: E402
from fairstream.serve import BatchedRecognizer, EndpointConfig, EndpointRule  # noqa: E402
from fairstream.serve.engine import Stream  # noqa: E402

RATE = 16000


@pytest.fixture(scope="module")
def golden() -> LoadedModel:
    return load_transducer(GOLDEN / "tiny_transducer.pt")


class _DevTools:
    """Just enough of the DevTools protocol to evaluate JavaScript in the open page."""

    def __init__(self, profile: Path, deadline: float) -> None:
        port_file = profile / "DevToolsActivePort"  # Chromium writes its port here
        while not port_file.exists() or not port_file.read_text().strip():
            if time.monotonic() > deadline:
                raise TimeoutError(f"chromium wrote no {port_file}")
            time.sleep(0.1)
        port = port_file.read_text().split()[0]
        with urllib.request.urlopen(f"http://127.0.0.1:{port}/json/list", timeout=10) as r:
            pages = [t for t in json.load(r) if t["type"] == "page"]
        assert pages, f"chromium on port {port} has no page open"
        self.ws = connect(pages[0]["webSocketDebuggerUrl"], max_size=None)
        self.next_id = 0

    def evaluate(self, expression: str) -> Any:  # Any: whatever the expression returns
        self.next_id += 1
        self.ws.send(json.dumps({"id": self.next_id, "method": "Runtime.evaluate",
                                 "params": {"expression": expression, "returnByValue": True}}))
        while True:
            reply = json.loads(self.ws.recv(timeout=30))
            if reply.get("id") == self.next_id:
                break
        assert "error" not in reply, f"{expression!r} failed: {reply['error']}"
        return reply["result"]["result"].get("value")


_STATE = """JSON.stringify({state: document.getElementById("result").dataset.state || "",
  result: document.getElementById("result").textContent,
  status: document.getElementById("status").textContent})"""


def run_page(url: str, wav: Path, profile: Path, timeout_s: float = 120.0) -> dict[str, str]:
    """Open ``url`` in headless Chromium with ``wav`` as the microphone and wait until the
    page has written its result; return the page's state, result and status texts."""
    cmd = [_chromium(), "--headless", "--no-sandbox", "--disable-gpu", "--no-first-run",
           f"--user-data-dir={profile}", "--remote-debugging-port=0",
           "--use-fake-ui-for-media-stream", "--use-fake-device-for-media-stream",
           f"--use-file-for-fake-audio-capture={wav}",
           "--autoplay-policy=no-user-gesture-required", url]
    deadline = time.monotonic() + timeout_s
    proc = subprocess.Popen(cmd, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
    try:
        tools = _DevTools(profile, deadline)
        try:
            while True:
                value = tools.evaluate(_STATE)  # None while the page is still loading
                page: dict[str, str] = json.loads(value) if value else {"state": ""}
                if page["state"] or time.monotonic() > deadline:
                    return page
                time.sleep(0.25)
        finally:
            tools.ws.close()
    finally:
        proc.terminate()
        try:
            _, err = proc.communicate(timeout=20)
        except subprocess.TimeoutExpired:
            proc.kill()
            _, err = proc.communicate()
        if proc.returncode not in (0, -15):
            print(err[-3000:])


def _aligned_correlation(sent: np.ndarray, received: np.ndarray) -> tuple[int, float]:
    """The circular shift of ``sent`` (Chromium loops the file) that best matches
    ``received``, and their normalized correlation there."""
    n = len(received)
    looped = np.tile(sent, n // len(sent) + 2)
    spectrum = np.fft.rfft(looped[: 2 * n])
    corr = np.fft.irfft(spectrum * np.conj(np.fft.rfft(received, 2 * n)), 2 * n)[: len(sent)]
    shift = int(np.argmax(corr))
    ref = looped[shift: shift + n]
    return shift, float(corr[shift] / np.sqrt(np.dot(ref, ref) * np.dot(received, received)))


def _golden_audio(utt: str) -> np.ndarray:
    """The file the fake microphone plays."""
    audio, _ = sf.read(GOLDEN / f"{utt}.wav", dtype="float32")
    return np.asarray(audio)


def _block_match(sent: np.ndarray, received: np.ndarray, block: int = RATE // 4) -> float:
    """Share of the ``block``-sample pieces of ``received`` that each match some stretch of
    the looped file (normalized correlation > 0.98, each piece aligned on its own): a buffer
    the fake device dropped or repeated misaligns what follows it for a whole-signal
    correlation, not for the pieces."""
    looped = np.concatenate([sent, sent[:block]])
    n = len(sent)
    size = 1 << int(np.ceil(np.log2(len(looped) + block)))
    spec = np.fft.rfft(looped, size)
    energy = np.concatenate([[0.0], np.cumsum(looped.astype(np.float64) ** 2)])
    window = energy[block: block + n] - energy[:n]  # energy of looped[k : k + block]
    good = total = 0
    for start in range(0, len(received) - block + 1, block):
        piece = received[start: start + block].astype(np.float64)
        norm = np.dot(piece, piece)
        if norm < 1e-8:  # silence matches silence
            continue
        corr = np.fft.irfft(spec * np.conj(np.fft.rfft(piece, size)), size)[:n]
        best = float(np.max(corr / np.sqrt(np.maximum(window, 1e-12) * norm)))
        total += 1
        good += best > 0.98
    return good / total if total else 0.0


def _offline_greedy(loaded: LoadedModel, wav: Path, reference: str) -> str:
    from lhotse import CutSet, Recording, SupervisionSegment

    rec = Recording.from_file(wav, recording_id=wav.stem)
    cut = rec.to_cut()
    cut.supervisions = [SupervisionSegment(id=wav.stem, recording_id=wav.stem, start=0,
                                           duration=rec.duration, text=reference)]
    df = decode_cuts(loaded.model, loaded.tokenizer, loaded.cmvn, CutSet.from_cuts([cut]),
                     progress=False, streaming=False)
    return str(df.hyp.iloc[0])


def _page_session(golden: LoadedModel, utt: str, tmp_path: Path,
                  monkeypatch: pytest.MonkeyPatch, endpoint: EndpointConfig = NO_ENDPOINT
                  ) -> tuple[dict[str, str], np.ndarray]:
    """Stream ``utt`` through the page; return what the page shows and the audio the server
    received from it.

    Chromium's fake capture device sometimes drops or repeats a buffer on a busy machine. So
    the audio passes as the file when it correlates with it as a whole, or when at least 90 %
    of its quarter-second pieces each match the file (a dropped buffer shifts what follows);
    otherwise the session is run again (at most three times in all) before the check fails.
    The check is on the microphone path we do not control; every other assertion holds for
    each session, and the page is held to the offline transcript of the audio it sent."""
    for attempt in range(3):
        page, audio, corr = _one_page_session(golden, utt, tmp_path / f"try{attempt}",
                                              monkeypatch, endpoint)
        pieces = _block_match(_golden_audio(utt), audio) if corr <= 0.98 else 1.0
        if corr > 0.98 or pieces >= 0.9:
            break
    assert corr > 0.98 or pieces >= 0.9, (
        f"the audio received is not {utt}.wav: correlation {corr:.3f}, {pieces:.0%} of its "
        "quarter-second pieces match the file")
    return page, audio


def _one_page_session(golden: LoadedModel, utt: str, tmp_path: Path,
                      monkeypatch: pytest.MonkeyPatch, endpoint: EndpointConfig
                      ) -> tuple[dict[str, str], np.ndarray, float]:
    """One session: the page's output, the audio received and its correlation with the file."""
    tmp_path.mkdir(parents=True, exist_ok=True)
    wav = GOLDEN / f"{utt}.wav"
    sent, rate = sf.read(wav, dtype="float32")
    assert rate == RATE, f"{wav} is at {rate} Hz"
    received: list[np.ndarray] = []
    accept = BatchedRecognizer.accept

    def recording(self: BatchedRecognizer, stream: Stream, samples: np.ndarray,
                  *args: Any) -> bool:  # Any: accept's other arguments, passed through
        received.append(np.array(samples, dtype=np.float32))
        return accept(self, stream, samples, *args)

    monkeypatch.setattr(BatchedRecognizer, "accept", recording)
    seconds = len(sent) / RATE
    with running(golden, endpoint) as (server, _):
        page = run_page(f"http://127.0.0.1:{server.port}/?autostart=1&seconds={seconds}",
                        wav, tmp_path / "profile")
        done = server.metrics.registry.get_sample_value("fairstream_streams_total",
                                                        {"outcome": "done"})
    assert page["state"] == "done", f"the page did not finish: {page}"
    assert page["status"] == "Finished.", page
    assert done == 1, f"the server ended {done} streams normally, expected 1"
    audio = np.concatenate(received)
    assert len(audio) == len(sent), "the page sends exactly `seconds` of audio"

    # The microphone path is the file: Chromium's fake device loops it from about its start
    # (a few samples early or late) and resamples it on the way to the 16 kHz AudioContext,
    # which leaves a fraction-of-a-sample delay and cuts the band near 8 kHz.
    shift, corr = _aligned_correlation(sent, audio)
    if corr > 0.98:
        assert min(shift, len(sent) - shift) < RATE // 10, f"the audio starts {shift} samples in"
    return page, audio, corr


@pytest.mark.parametrize("utt", ["spk0032-000", "spk0033-002"])
def test_page_shows_the_offline_transcript_of_its_audio(
        golden: LoadedModel, utt: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    page, audio = _page_session(golden, utt, tmp_path, monkeypatch)
    # That sub-sample shift is enough to change what the tiny golden model (trained for 500
    # steps) hears, so the page cannot be held to the file's transcript in expected.json.
    # It is held to the model's offline greedy transcript of exactly the audio the page sent,
    # which the streaming server reproduces (tests/test_serve.py).
    heard = tmp_path / f"{utt}_received.wav"
    sf.write(heard, audio, RATE, subtype="FLOAT")
    refs = json.loads((GOLDEN / "expected.json").read_text())["refs"]
    expected = _offline_greedy(golden, heard, refs[utt]["text"])
    assert expected, f"the model hears nothing in {heard}"
    assert page["result"] == expected, (page, expected)


def test_page_keeps_every_final_segment(
        golden: LoadedModel, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """With a segment ending every 0.5 s the page must show all final segments in order."""
    never = EndpointRule(False, 1e9, 0.0)
    short = EndpointConfig(rule1=never, rule2=never, rule3=EndpointRule(False, 0.0, 0.5))
    page, audio = _page_session(golden, "spk0032-000", tmp_path, monkeypatch, short)
    engine = BatchedRecognizer(golden.model, golden.tokenizer, golden.cmvn, endpoint=short)
    results = _feed_ragged(engine, {"page": audio})["page"]
    finals = [r.text for r in results if r.is_final]
    assert len(finals) >= 4, finals
    assert sum(1 for t in finals if t) >= 2, finals
    assert page["result"] == " ".join(t for t in finals if t), (page, finals)


def test_page_and_worklet_are_served(golden: LoadedModel) -> None:
    with running(golden) as (server, _):
        base = f"http://127.0.0.1:{server.port}"
        with urllib.request.urlopen(f"{base}/?autostart=1", timeout=10) as r:
            page = r.read().decode()
            assert r.headers["Content-Type"] == "text/html; charset=utf-8"
        with urllib.request.urlopen(f"{base}/worklet.js", timeout=10) as r:
            worklet = r.read().decode()
            assert r.headers["Content-Type"] == "text/javascript; charset=utf-8"
    assert 'aria-live="polite"' in page and 'addModule("/worklet.js")' in page
    assert not re.search(r'(src|href)="(https?:)?//', page), "the page loads nothing external"
    assert 'registerProcessor("pcm16k"' in worklet
