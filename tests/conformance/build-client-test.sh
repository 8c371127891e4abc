#!/usr/bin/env bash
# Builds SyncEvolution 2.0.0's integration test program `client-test` (and the matching
# `syncevolution` command line client, which conformance.sh uses to write the two client
# configurations) with the file backend only, linked against Debian 12's libsynthesis.
#
#   tests/conformance/build-client-test.sh [WORKDIR]     (default: <checkout>/target/client-test)
#
# Normally called by tests/conformance.sh. Every step leaves a marker (the unpacked source,
# `configure`, `config.status`, the programs) and is skipped when it is already there, so a
# second call costs nothing; `rm -rf target/client-test` starts over.
#
# Layout of WORKDIR:
#   apt/            private apt configuration and package lists (deb-src only)
#   debian-src/     the downloaded Debian source package
#   src/            the unpacked upstream source, with two fixes (see below)
#   build/          out-of-tree build; build/src/client-test, build/src/syncevolution
#   logs/           apt-source.log, autogen.log, configure.log, make.log
#
# Environment:
#   DEB_MIRROR=URI     Debian archive holding bookworm's source packages (default: the archive
#                      the system's own apt sources use for bookworm)
#   SYNCEVO_GIT=DIR    take the source from `git archive syncevolution-2-0-0` of this git dir
#                      (a clone of https://github.com/pohly/syncevolution) instead of Debian
#   JOBS=N             parallel make jobs (default: nproc)
set -euo pipefail

HERE=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
CHECKOUT=$(cd "$HERE/../.." && pwd)
CT=${1:-$CHECKOUT/target/client-test}
mkdir -p "$CT"
CT=$(cd "$CT" && pwd)
SRC=$CT/src
BUILD=$CT/build
LOGS=$CT/logs
mkdir -p "$LOGS"

# Debian's syncevolution 2.0.0-3 (bookworm main). Its upstream tarball is identical to the
# upstream git tag syncevolution-2-0-0 (commit 238f9368c2e8); the checksum pins it, so any
# mirror gives the same source.
DEB_VERSION=2.0.0-3
ORIG_TARBALL=syncevolution_2.0.0.orig.tar.bz2
ORIG_SHA256=8724713712a30f2457bf38660affa9665694c51717835eac9ac9155cb3b488ce
GIT_TAG=syncevolution-2-0-0

JOBS=${JOBS:-$(nproc)}
SUDO=()
if [ "$(id -u)" != 0 ]; then
    SUDO=(sudo)
fi
# Wait up to 15 minutes for another apt/dpkg run instead of failing on its lock.
APT=(apt-get -o DPkg::Lock::Timeout=900)

say() { printf '[build-client-test %s] %s\n' "$(date +%H:%M:%S)" "$*"; }
fail() { say "ERROR: $*" >&2; exit 1; }
# Runs a step with its output in a log file; shows the log's tail when it fails.
logged() {
    local log=$1
    shift
    if ! "$@" >"$log" 2>&1; then
        tail -n 40 "$log" >&2
        fail "failed: $* (full log: $log)"
    fi
}
START=$(date +%s)

# --- 1. build dependencies ------------------------------------------------------------------
# Only what a file-backend build needs (no `apt-get build-dep`: that would pull in the
# Evolution, KDE and GNOME stacks). bzip2 unpacks the tarball, debian-archive-keyring verifies
# the private deb-src list, curl and python3 are used by conformance.sh.
DEPS=(autoconf automake libtool intltool gettext libxml-parser-perl make g++ pkg-config perl
      libglib2.0-dev libcppunit-dev libsynthesis-dev libcurl4-gnutls-dev libboost-dev
      libical-dev bzip2 debian-archive-keyring curl python3)
missing=()
for pkg in "${DEPS[@]}"; do
    [ "$(dpkg-query -W -f='${Status}' "$pkg" 2>/dev/null || true)" = "install ok installed" ] \
        || missing+=("$pkg")
done
if [ ${#missing[@]} -gt 0 ]; then
    if [ ${#SUDO[@]} -gt 0 ] && ! command -v sudo >/dev/null; then
        fail "not root and no sudo: install ${missing[*]}"
    fi
    say "installing ${missing[*]}"
    apt_install() {
        "${SUDO[@]}" env DEBIAN_FRONTEND=noninteractive "${APT[@]}" install -y -q \
            --no-install-recommends "${missing[@]}"
    }
    # A fresh system may have no package lists yet: update once, then try again.
    apt_install || { "${SUDO[@]}" "${APT[@]}" update -q && apt_install; }
fi

# --- 2. source --------------------------------------------------------------------------------
# The bookworm archive the system's apt already uses (deb822 *.sources or sources.list).
system_archive() {
    local f
    for f in /etc/apt/sources.list.d/*.sources; do
        [ -f "$f" ] || continue
        # one paragraph per source; print URIs of a "deb" paragraph for bookworm main
        awk 'BEGIN { RS = "" }
             /(^|\n)Types:[^\n]*deb/ && /(^|\n)Suites:[^\n]*bookworm([ \n]|$)/ &&
             /(^|\n)Components:[^\n]*main/ {
                 n = split($0, lines, "\n")
                 for (i = 1; i <= n; i++)
                     if (lines[i] ~ /^URIs:/) { split(lines[i], w, " "); print w[2]; exit }
             }' "$f"
    done
    if [ -f /etc/apt/sources.list ]; then
        awk '$1 == "deb" && $0 ~ / bookworm / && $0 ~ / main/ {
                 for (i = 2; i <= NF; i++) if ($i ~ /:\/\//) { print $i; exit } }' /etc/apt/sources.list
    fi
}

fetch_from_debian() {
    local dest=$1 archive=${DEB_MIRROR:-}
    local dl=$CT/debian-src
    [ -n "$archive" ] || archive=$(system_archive | head -n 1)
    [ -n "$archive" ] || fail "no bookworm archive in the system's apt sources: set DEB_MIRROR=URI (or SYNCEVO_GIT)"
    mkdir -p "$dl"
    if ! echo "$ORIG_SHA256  $dl/$ORIG_TARBALL" | sha256sum --check --status 2>/dev/null; then
        # A private apt setup: only this deb-src list, lists and caches under $CT/apt. The
        # system's sources, /var/lib/apt/lists and /var/cache/apt are left alone.
        mkdir -p "$CT/apt/sources" "$CT/apt/lists/partial"
        cat >"$CT/apt/sources/syncevolution-src.sources" <<EOF
Types: deb-src
URIs: $archive
Suites: bookworm
Components: main
Signed-By: /usr/share/keyrings/debian-archive-keyring.gpg
EOF
        local apt_src=(apt-get -o DPkg::Lock::Timeout=900
                       -o Dir::Etc::sourcelist=/dev/null -o Dir::Etc::sourceparts="$CT/apt/sources"
                       -o Dir::State::Lists="$CT/apt/lists"
                       -o Dir::Cache::pkgcache= -o Dir::Cache::srcpkgcache=)
        say "apt-get source --download-only syncevolution=$DEB_VERSION (from $archive)"
        download() {
            "${apt_src[@]}" update && (cd "$dl" && "${apt_src[@]}" source --download-only "syncevolution=$DEB_VERSION")
        }
        logged "$LOGS/apt-source.log" download
        echo "$ORIG_SHA256  $dl/$ORIG_TARBALL" | sha256sum --check --status \
            || fail "$dl/$ORIG_TARBALL does not have the expected SHA-256"
    fi
    # Only the upstream tarball; the packaging's own patches (debian/) are not needed here.
    tar -xjf "$dl/$ORIG_TARBALL" -C "$dest" --strip-components=1
}

if [ ! -f "$SRC/configure.ac" ]; then
    rm -rf "$SRC.part"
    mkdir -p "$SRC.part"
    if [ -n "${SYNCEVO_GIT:-}" ]; then
        git --git-dir="$SYNCEVO_GIT" rev-parse -q --verify "$GIT_TAG^{commit}" >/dev/null \
            || fail "$SYNCEVO_GIT has no tag $GIT_TAG"
        say "source: git archive $GIT_TAG from $SYNCEVO_GIT"
        git --git-dir="$SYNCEVO_GIT" archive "$GIT_TAG" | tar -x -C "$SRC.part"
    else
        fetch_from_debian "$SRC.part"
    fi
    [ -f "$SRC.part/configure.ac" ] || fail "the unpacked source has no configure.ac"
    mv "$SRC.part" "$SRC"
fi

# --- 3. two source fixes (idempotent) ---------------------------------------------------------
# a) CurlTransportAgent.cpp hands two capture-less lambdas to curl_easy_setopt(), a varargs
#    function: the closure objects are passed instead of function pointers, libcurl calls
#    garbage and the client crashes on its first POST. A unary `+` converts each lambda to a
#    plain function pointer.
curl_agent=$SRC/src/syncevo/CurlTransportAgent.cpp
if ! grep -q 'CURLOPT_WRITEFUNCTION, +writeDataCallback' "$curl_agent"; then
    say "fix: libcurl callbacks as function pointers ($curl_agent)"
    sed -i -e 's/CURLOPT_WRITEFUNCTION, writeDataCallback)/CURLOPT_WRITEFUNCTION, +writeDataCallback)/' \
           -e 's/CURLOPT_READFUNCTION, readDataCallback)/CURLOPT_READFUNCTION, +readDataCallback)/' \
           "$curl_agent"
    if ! grep -q 'CURLOPT_WRITEFUNCTION, +writeDataCallback' "$curl_agent" \
        || ! grep -q 'CURLOPT_READFUNCTION, +readDataCallback' "$curl_agent"; then
        fail "could not apply the libcurl callback fix"
    fi
fi
# b) testTimeout opens a socket that accepts nothing, bound to all interfaces; everything in
#    this suite stays on the loopback interface.
client_test_cpp=$SRC/test/ClientTest.cpp
if grep -q 'htonl(INADDR_ANY)' "$client_test_cpp"; then
    say "fix: testTimeout binds 127.0.0.1 ($client_test_cpp)"
    sed -i 's/servaddr\.sin_addr\.s_addr = htonl(INADDR_ANY);/servaddr.sin_addr.s_addr = htonl(INADDR_LOOPBACK);/' \
        "$client_test_cpp"
    ! grep -q 'htonl(INADDR_ANY)' "$client_test_cpp" || fail "could not apply the testTimeout fix"
fi

# --- 4. autotools -------------------------------------------------------------------------------
# autoreconf (autoconf 2.71) runs plain `intltoolize`, which then insists that IT_PROG_INTLTOOL
# starts a line of configure.ac; there it is indented. With --automake it is found anyway.
if [ ! -x "$SRC/configure" ]; then
    say "autogen.sh"
    logged "$LOGS/autogen.log" env -C "$SRC" INTLTOOLIZE="intltoolize --automake" sh ./autogen.sh
fi

# --- 5. configure ---------------------------------------------------------------------------------
# Static, file backend only, no D-Bus service, no GUI, libcurl transport.
# -std=gnu++14: under g++ 12's default C++17, libsynthesis' `typedef unsigned char byte`
# collides with std::byte ("reference to 'byte' is ambiguous").
if [ ! -f "$BUILD/config.status" ]; then
    mkdir -p "$BUILD"
    say "configure"
    disabled=(ebook ecal akonadi dav pbap activesync sqlite xmlrpc kcalextended qtcontacts
              maemocal tdepimcal tdepimabc tdepimnotes dbus-service gui notify bluetooth goa
              signon oauth2 gnome-keyring kwallet tdewallet uoa gsso libsoup doc)
    logged "$LOGS/configure.log" env -C "$BUILD" "$SRC/configure" \
        --with-synthesis-src=none --disable-shared --enable-static \
        --enable-unit-tests --enable-integration-tests --enable-file --enable-libcurl \
        "${disabled[@]/#/--disable-}" --without-rst2man --without-rst2html \
        CXXFLAGS="-O1 -g0 -std=gnu++14" CFLAGS="-O1 -g0"
fi

# --- 6. make ----------------------------------------------------------------------------------------
# Building just the two programs skips BUILT_SOURCES (generated files such as
# src/syncevo/CmdlineHelp.c that only `make all` creates first): make those explicitly.
if [ ! -x "$BUILD/src/client-test" ] || [ ! -x "$BUILD/src/syncevolution" ]; then
    # shellcheck disable=SC2016 # $(BUILT_SOURCES) is a make variable
    read -r -a built_sources < <(make -s -C "$BUILD" --no-print-directory \
        --eval 'ct-print-built-sources: ; @echo $(BUILT_SOURCES)' ct-print-built-sources)
    say "make -j$JOBS client-test syncevolution (a few minutes)"
    compile() {
        if [ ${#built_sources[@]} -gt 0 ]; then
            make -C "$BUILD" -j"$JOBS" "${built_sources[@]}" || return 1
        fi
        make -C "$BUILD" -j"$JOBS" src/client-test src/syncevolution
    }
    logged "$LOGS/make.log" compile
fi
# client-test runs these from its working directory.
for f in client-test syncevolution synccompare testcases templates; do
    [ -e "$BUILD/src/$f" ] || fail "$BUILD/src/$f is missing after the build"
done
say "client-test ready: $BUILD/src/client-test ($(( $(date +%s) - START )) s)"
