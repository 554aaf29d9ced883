#!/usr/bin/env bash
# Debian's ffmpeg (ffmpeg + ffprobe), the reference decoder of the video fidelity tests
# (tests/pipelines/test_real_video.py), installed only when missing.
set -euo pipefail
source "$(dirname "${BASH_SOURCE[0]}")/apt_install.sh"
if command -v ffmpeg >/dev/null && command -v ffprobe >/dev/null; then
    exit 0
fi
apt_install ffmpeg ffmpeg
