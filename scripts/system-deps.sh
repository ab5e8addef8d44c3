#!/usr/bin/env bash
# Install the Debian packages speechtl needs, when they are missing.
# As root they are installed with apt-get; otherwise the exact command is printed and setup stops.
set -euo pipefail

need=()
command -v espeak-ng >/dev/null || need+=(espeak-ng)
command -v ffmpeg >/dev/null || need+=(ffmpeg)
[ -d /usr/share/asterisk/sounds/es_MX_f_Allison ] || need+=(asterisk-core-sounds-es-g722)
[ -f /usr/share/doc/asterisk-core-sounds-es/core-sounds-es.txt.gz ] || need+=(asterisk-core-sounds-es)
[ -d /usr/share/games/fortunes/es ] || need+=(fortunes-es)

if [ ${#need[@]} -eq 0 ]; then
    exit 0
fi
if [ "$(id -u)" -eq 0 ]; then
    echo "speechtl setup: installing Debian packages: ${need[*]}"
    apt-get update -qq
    DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends "${need[@]}" >/dev/null
else
    echo "speechtl setup: missing Debian packages. Install them with:" >&2
    echo "    sudo apt-get update && sudo apt-get install -y ${need[*]}" >&2
    exit 1
fi
