#!/usr/bin/env bash
# Debian's ffmpeg (ffmpeg + ffprobe), the reference decoder of the video fidelity tests
# (tests/pipelines/test_real_video.py), installed only when missing.
set -euo pipefail
if command -v ffmpeg >/dev/null && command -v ffprobe >/dev/null; then
    exit 0
fi
if [[ "$(id -u)" -ne 0 ]]; then
    echo "ffmpeg is not installed: run 'sudo apt-get install -y ffmpeg' (or re-run as root)" >&2
    exit 2
fi
export DEBIAN_FRONTEND=noninteractive
apt-get update -q
apt-get install -y -q ffmpeg
