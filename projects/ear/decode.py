"""Every input's way in: FFmpeg in a subprocess → mono float32 at 16 kHz, under guard.

FFmpeg reads from a pipe with only the `pipe` protocol allowed, so a playlist (HLS, concat)
cannot make it open other files or the network. MP4/MOV keeps its index at the end and needs
seeking: that one container is read from a file (a temp file for uploads, always removed) with
the demuxer forced to `mov` and only the `file` protocol allowed. A query is decoded whole
(`decode`); a track streams (`decode_stream`), a few seconds at a time.
"""
from __future__ import annotations

import io
import json
import os
import struct
import subprocess
import tempfile
import threading
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import BinaryIO, Iterable, Iterator

import numpy as np
import soundfile as sf

from .config import Config
from .errors import BadAudio

SAMPLE_RATE = 16000
MIN_SECONDS = 1.0
SILENCE_RMS = 1e-4  # -80 dBFS: nothing a microphone or a track would give
# A track whose first minute is silent is refused then, not after decoding hours of it; music
# that begins later than that is not something people send.
SILENCE_CHECK_S = 60.0
_CHUNK = 1 << 16  # bytes fed to FFmpeg at a time
_READ_BYTES = 1 << 19  # of FFmpeg's output at a time: 8 s


def decode(source: bytes | str | os.PathLike, *, max_seconds: float, timeout_s: float,
           min_seconds: float = MIN_SECONDS) -> np.ndarray:
    """Decode `source` (raw bytes or a file path) to mono float32 at SAMPLE_RATE, whole.

    Raises BadAudio with a code naming the problem: empty, unreadable, not_audio,
    no_audio_stream, truncated, too_short, too_long, silent, decode_timeout.
    """
    parts = [*decode_stream(source, max_seconds=max_seconds, timeout_s=timeout_s, min_seconds=min_seconds)]
    return np.concatenate(parts) if parts else np.zeros(0, np.float32)


def decode_stream(source: bytes | str | os.PathLike, *, max_seconds: float, timeout_s: float,
                  min_seconds: float = MIN_SECONDS) -> Iterator[np.ndarray]:
    """`decode`, a few seconds at a time as FFmpeg delivers them, so that an hours-long track
    never has to be held whole. Raises what `decode` raises; `too_long` and `silent` (judged
    on the first SILENCE_CHECK_S) as soon as they are known, the others at the end.
    `timeout_s` bounds the whole stream, the caller's work on each part included.
    """
    with _ffmpeg_input(source) as (input_args, stdin_source):
        cmd = [
            "ffmpeg", "-nostdin", "-hide_banner", "-loglevel", "error", *input_args,
            "-map", "0:a:0", "-vn", "-sn", "-dn", "-map_metadata", "-1",
            # One sample past the cap tells "too long" apart from "exactly at the cap".
            "-t", f"{max_seconds + 1.0 / SAMPLE_RATE:.6f}",
            # Mono made by FFmpeg: half the resampling and half the bytes through the pipe.
            # rematrix_maxval=1: stereo becomes (L + R) / 2, without `-ac 1`'s +3 dB; more
            # channels get FFmpeg's weighted downmix. A shorter resampling filter than the
            # default: a third of the CPU, and the fingerprints do not use the top of the band
            # where it differs.
            "-af", f"aresample={SAMPLE_RATE}:filter_size=16:rematrix_maxval=1,aformat=channel_layouts=mono",
            "-c:a", "pcm_f32le", "-f", "wav", "-fflags", "+bitexact",
            # Written in FFmpeg's 32 KB buffers, not a packet (4 KB) at a time: each write wakes
            # this process, and 10,000 wakes cost it 0.5 ms per second of audio (docs/speed.md).
            "-flush_packets", "0",
            "pipe:1",
        ]
        with _running(cmd, stdin_source, timeout_s) as run:
            channels = _wav_channels(run.stdout)
            count, energy = 0, 0.0  # samples so far, and their sum of squares
            for part in _wav_parts(run.stdout) if channels == 1 else ():
                if count + part.size > max_seconds * SAMPLE_RATE:
                    raise BadAudio("too_long", f"The audio is longer than the {max_seconds:g} s allowed.", 413)
                checked = count >= SILENCE_CHECK_S * SAMPLE_RATE
                count += part.size
                energy += float(np.dot(part, part))  # float32 sums of a part: plenty for a silence test
                if not checked and count >= SILENCE_CHECK_S * SAMPLE_RATE:
                    _refuse_silence(energy, count)
                yield part
    if run.returncode is None:
        raise BadAudio("decode_timeout", f"Decoding took longer than {timeout_s:g} s.", 422)
    if not channels or (run.returncode != 0 and count < min_seconds * SAMPLE_RATE):
        raise _explain(run.stderr)
    if count < min_seconds * SAMPLE_RATE:
        raise BadAudio("too_short",
                       f"Only {count / SAMPLE_RATE:.2f} s of audio; at least {min_seconds:g} s needed.",
                       422)
    _refuse_silence(energy, count)


def _refuse_silence(energy: float, count: int) -> None:
    if count and np.sqrt(energy / count) < SILENCE_RMS:
        raise BadAudio("silent", "The audio is silent.", 422)


def decode_query(source: bytes | str | os.PathLike, config: Config) -> np.ndarray:
    """`decode` with the limits of a query (a visitor's clip, an upload to /identify)."""
    return decode(source, max_seconds=config.max_query_seconds, timeout_s=config.decode_timeout_s)


def decode_track(source: bytes | str | os.PathLike, config: Config) -> Iterator[np.ndarray]:
    """`decode_stream` with the limits of a catalog track: it may be hours long, so its time
    limit scales with the length cap."""
    return decode_stream(source, max_seconds=config.max_track_seconds,
                         timeout_s=max(config.decode_timeout_s, config.max_track_seconds / 20))


def read_tags(source: bytes | str | os.PathLike, names: Iterable[str], *,
              timeout_s: float = 10.0) -> dict[str, str]:
    """The tags called `names` (lower case: title, artist, ...) that the file has.

    libsndfile reads WAV/FLAC/Ogg tags in-process in a millisecond; anything else costs an
    ffprobe run (~0.1 s of CPU, mostly its start-up). Tags are a courtesy: any failure gives
    an empty dict, never an error.
    """
    try:
        with sf.SoundFile(io.BytesIO(source) if isinstance(source, bytes) else source) as fh:
            return _pick_tags(fh.copy_metadata(), names)
    except (sf.LibsndfileError, RuntimeError, TypeError, OSError):
        pass
    try:
        with _ffmpeg_input(source) as (input_args, stdin_source):
            cmd = ["ffprobe", "-v", "error", *input_args, "-show_entries",
                   "format_tags:stream_tags", "-of", "json"]
            with _running(cmd, stdin_source, timeout_s) as run:
                out = run.stdout.read()
        info = json.loads(out or b"{}")
    except (BadAudio, ValueError):
        return {}
    tags: dict[str, str] = {}
    for entry in [info.get("format", {})] + info.get("streams", []):
        for key, value in _pick_tags(entry.get("tags") or {}, names).items():
            tags.setdefault(key, value)
    return tags


def _pick_tags(raw: dict, names: Iterable[str]) -> dict[str, str]:
    wanted = set(names)
    return {k.lower(): str(v).strip() for k, v in raw.items() if k.lower() in wanted and str(v).strip()}


@contextmanager
def _ffmpeg_input(source: bytes | str | os.PathLike) -> Iterator[tuple[list[str], bytes | Path | None]]:
    """FFmpeg input arguments for `source`, and what to feed its stdin (None: nothing)."""
    if isinstance(source, (bytes, bytearray, memoryview)):
        data = bytes(source)
        if not data:
            raise BadAudio("empty", "The upload is empty: no audio was sent.")
        if _is_mp4(data[:12]):
            with tempfile.NamedTemporaryFile(suffix=".mp4") as tmp:
                tmp.write(data)
                tmp.flush()
                yield _mp4_args(tmp.name), None
            return
        yield _PIPE_ARGS, data
        return
    path = Path(source)
    try:
        size = path.stat().st_size
        with path.open("rb") as fh:
            head = fh.read(12)
    except OSError as exc:
        raise BadAudio("unreadable", f"Cannot read {path}: {exc.strerror}.", 404) from exc
    if size == 0:
        raise BadAudio("empty", f"{path} is empty.")
    yield (_mp4_args(str(path)), None) if _is_mp4(head) else (_PIPE_ARGS, path)


_PIPE_ARGS = ["-protocol_whitelist", "pipe", "-i", "pipe:0"]


def _mp4_args(path: str) -> list[str]:
    # The absolute path keeps a name like "a:b.mp4" from reading as a protocol.
    return ["-protocol_whitelist", "file", "-f", "mov", "-i", "file:" + os.path.abspath(path)]


def _is_mp4(head: bytes) -> bool:
    return len(head) >= 8 and head[4:8] == b"ftyp"


@dataclass
class _Run:
    stdout: BinaryIO
    returncode: int | None = None  # None: killed at the time limit
    stderr: str = ""


@contextmanager
def _running(cmd: list[str], stdin_source: bytes | Path | None, timeout_s: float) -> Iterator[_Run]:
    """Run FFmpeg/ffprobe, feeding stdin from a thread, for the caller to read its stdout;
    afterwards the run holds its return code and stderr. The process is killed at `timeout_s`,
    or when the caller stops early. It has a session of its own: a signal to our process group
    (Supervisor stopping `ear worker`) reaches us, who decide, not a decode cut short."""
    proc = subprocess.Popen(cmd, stdin=subprocess.PIPE if stdin_source is not None else subprocess.DEVNULL,
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, start_new_session=True)
    timed_out = threading.Event()

    def on_timeout() -> None:
        timed_out.set()
        proc.kill()

    timer = threading.Timer(timeout_s, on_timeout)
    timer.daemon = True  # never keeps a process from exiting
    timer.start()
    stderr_chunks: list[bytes] = []
    helpers = [threading.Thread(target=lambda: stderr_chunks.append(proc.stderr.read()), daemon=True)]
    if stdin_source is not None:
        helpers.append(threading.Thread(target=_feed, args=(proc.stdin, stdin_source), daemon=True))
    for t in helpers:
        t.start()
    run = _Run(proc.stdout)
    try:
        yield run
        proc.wait()
    finally:
        timer.cancel()
        if proc.poll() is None:
            proc.kill()
            proc.wait()
        for t in helpers:
            t.join(timeout=5)
        proc.stdout.close()
        proc.stderr.close()
        run.stderr = b"".join(stderr_chunks).decode("utf-8", "replace")
        run.returncode = None if timed_out.is_set() else proc.returncode


def _feed(pipe, source: bytes | Path) -> None:
    try:
        if isinstance(source, bytes):
            view = memoryview(source)
            for start in range(0, len(view), _CHUNK):
                pipe.write(view[start:start + _CHUNK])
        else:
            with open(source, "rb") as fh:
                while block := fh.read(_CHUNK):
                    pipe.write(block)
    except (BrokenPipeError, OSError):
        pass  # FFmpeg stops reading once it has enough (the -t cap) or gives up on bad input
    finally:
        try:
            pipe.close()
        except OSError:
            pass


def _read_exact(stream, n: int) -> bytes:
    buf = b""
    while len(buf) < n:
        block = stream.read(n - len(buf))
        if not block:
            break
        buf += block
    return buf


def _wav_channels(stream: BinaryIO) -> int:
    """Read the header of FFmpeg's streamed WAV up to its data: the channel count (0: no WAV)."""
    if _read_exact(stream, 12)[8:12] != b"WAVE":
        return 0
    channels = 1
    while True:
        header = _read_exact(stream, 8)
        if len(header) < 8:
            return 0
        chunk_id, size = header[:4], struct.unpack("<I", header[4:])[0]
        if chunk_id == b"data":
            return channels  # streamed output has no known size: the data runs to the end
        body = _read_exact(stream, size + (size & 1))
        if chunk_id == b"fmt ":
            channels = struct.unpack("<H", body[2:4])[0]


def _wav_parts(stream: BinaryIO) -> Iterator[np.ndarray]:
    """The mono WAV's float32 samples as they come."""
    leftover = b""
    while block := stream.read(_READ_BYTES):
        block = leftover + block
        usable = len(block) - len(block) % 4
        leftover = block[usable:]
        yield np.frombuffer(block, dtype="<f4", count=usable // 4).copy()


def _explain(stderr: str) -> BadAudio:
    text = stderr.lower()
    if "not on whitelist" in text:
        return BadAudio("not_audio", "The input refers to other files or URLs (a playlist?); "
                        "send the audio itself.", 415)
    if "moov atom not found" in text or "end of file" in text or "truncat" in text:
        return BadAudio("truncated", "The file is truncated or damaged; no audio could be read.")
    if "matches no streams" in text:
        return BadAudio("no_audio_stream", "The file has no audio stream.", 415)
    return BadAudio("not_audio", "This is not audio FFmpeg can read.", 415)
