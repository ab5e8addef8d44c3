#!/usr/bin/env bash
# Install the Debian packages speechtl needs, when they are missing.
# As root they are installed with apt-get; otherwise the exact command is printed and setup stops.
#
# asterisk-prompt-es-co (the Colombian Spanish prompts, a held-out speaker) conflicts with
# asterisk-core-sounds-es, whose texts we need, so it is never installed: its .deb is downloaded
# and extracted into the speechtl cache (the folder speechtl/importers/asterisk.py reads).
set -euo pipefail

status=0
need=()
command -v espeak-ng >/dev/null || need+=(espeak-ng)
command -v ffmpeg >/dev/null || need+=(ffmpeg)
[ -d /usr/share/asterisk/sounds/es_MX_f_Allison ] || need+=(asterisk-core-sounds-es-g722)
[ -f /usr/share/doc/asterisk-core-sounds-es/core-sounds-es.txt.gz ] || need+=(asterisk-core-sounds-es)
[ -d /usr/share/games/fortunes/es ] || need+=(fortunes-es)

if [ ${#need[@]} -gt 0 ]; then
    if [ "$(id -u)" -eq 0 ]; then
        echo "speechtl setup: installing Debian packages: ${need[*]}"
        apt-get update -qq
        DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends "${need[@]}" >/dev/null
    else
        echo "speechtl setup: missing Debian packages. Install them with:" >&2
        echo "    sudo apt-get update && sudo apt-get install -y ${need[*]}" >&2
        status=1
    fi
fi

esco_pkg=asterisk-prompt-es-co
esco="${SPEECHTL_CACHE:-$HOME/.cache/speechtl}/debian/$esco_pkg"

# Download the .deb into a temporary folder and extract it next to $esco, then rename it into
# place: a folder at $esco is always complete. Runs in a subshell (its own traps); no root needed
# unless the package lists lack the package.
fetch_esco() (
    work=$(mktemp -d) || exit 1
    tmp=
    trap 'rm -rf "$work" ${tmp:+"$tmp"}' EXIT
    cd "$work" || exit 1
    opts=(-qq)
    # as root apt drops to the _apt user, which cannot write here; download as root, no warning
    [ "$(id -u)" -ne 0 ] || opts+=(-o APT::Sandbox::User=root)
    if ! apt-get download "${opts[@]}" "$esco_pkg" 2>/dev/null; then
        [ "$(id -u)" -eq 0 ] || exit 1
        apt-get update -qq || exit 1
        apt-get download "${opts[@]}" "$esco_pkg" || exit 1
    fi
    debs=("$esco_pkg"_*.deb)
    [ -f "${debs[0]}" ] || exit 1
    mkdir -p "$(dirname "$esco")" || exit 1
    tmp=$(mktemp -d "$esco.tmp.XXXXXX") || exit 1
    dpkg-deb -x "${debs[0]}" "$tmp" || exit 1
    if [ ! -d "$tmp/usr/share/asterisk/sounds/es/digits" ]; then
        echo "speechtl setup: ${debs[0]} has no usr/share/asterisk/sounds/es/digits" >&2
        exit 1
    fi
    chmod 755 "$tmp" || exit 1
    rm -rf "$esco" || exit 1  # a stale folder without the sounds
    mv -T "$tmp" "$esco" || exit 1
    echo "speechtl setup: extracted $esco_pkg into $esco"
)

if [ ! -d "$esco/usr/share/asterisk/sounds/es" ]; then
    if ! fetch_esco; then
        q=$(printf %q "$esco")
        echo "speechtl setup: missing $esco_pkg (extracted, never installed: it conflicts with" \
            "asterisk-core-sounds-es). Get it with:" >&2
        echo "    sudo apt-get update" >&2
        echo "    cd \"\$(mktemp -d)\" && apt-get download $esco_pkg && mkdir -p $q.tmp" \
            "&& dpkg-deb -x ${esco_pkg}_*.deb $q.tmp && mv -T $q.tmp $q" >&2
        status=1
    fi
fi
exit $status
