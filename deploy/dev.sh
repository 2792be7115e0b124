#!/usr/bin/env bash
# Set ear up on a fresh Debian/Ubuntu machine, then run it or its tests.
#   deploy/dev.sh run    apt packages, a venv in .venv, a demo catalog, then `ear serve` on :5001
#                        with `ear worker` beside it (it adds what is uploaded)
#   deploy/dev.sh test   apt packages, a venv in .venv, then the whole test suite
set -euo pipefail
cd "$(dirname "$0")/.."
mode=${1:-run}
sudo=""
[ "$(id -u)" -eq 0 ] || sudo=sudo

packages=(ffmpeg python3 python3-venv g++ python3-dev)  # a compiler for annoy
case "$mode" in
  run) packages+=(singularity-music fluidsynth fluid-soundfont-gm) ;;  # the demo: 16 real tracks (CC BY-SA), 4 beats to hum
  test) packages+=(espeak-ng nginx-light curl chromium postgresql fluidsynth fluid-soundfont-gm) ;;  # the tests run the real ones
  *) echo "usage: $0 run|test" >&2; exit 2 ;;
esac
$sudo apt-get update -q
$sudo apt-get -o DPkg::Lock::Timeout=600 install -y -q "${packages[@]}"

[ -x .venv/bin/python ] || python3 -m venv .venv
deploy/install-torch.sh .venv  # the CPU build (EAR_TORCH_INDEX_URL), before the pin asks for it
.venv/bin/pip install -q --disable-pip-version-check -e ".[test]"

if [ "$mode" = test ]; then
  # Two processes, a test file each at a time: most tests wait on FFmpeg, Gunicorn, Nginx,
  # PostgreSQL or a browser as much as they compute, so two cores take the suite in far less time.
  exec .venv/bin/python -m pytest tests -n "${EAR_TEST_PROCESSES:-2}" --dist loadfile "${@:2}"
fi

demo=/usr/share/games/singularity/music
.venv/bin/ear ingest "$demo"
mkdir -p data
# Four beats with a clear hook (folk tunes over generated backing), and a hum of the first one.
.venv/bin/python -m ear.lab.hum_synth data/demo-hum 4
.venv/bin/ear ingest data/demo-hum/beats
# A 10 s clip from the middle of a catalog track, re-encoded as a browser would send it.
ffmpeg -nostdin -v error -y -ss 60 -t 10 -i "$demo/Awakening.ogg" -c:a libopus -b:a 32k data/demo-clip.webm
cat <<MSG

ear is starting on http://127.0.0.1:5001 with $(.venv/bin/ear tracks | wc -l) tracks. In another shell:
  curl -F audio=@data/demo-clip.webm http://127.0.0.1:5001/identify
  curl -F audio=@data/demo-hum/hum.webm http://127.0.0.1:5001/hum
MSG
.venv/bin/ear worker &
trap 'kill $!' EXIT
.venv/bin/ear serve
