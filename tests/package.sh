#!/usr/bin/env bash
# tests/package.sh -- mpe installs and ships the way Lua, C and Debian users expect;
# run by .ci/run step (g), as root, from anywhere in a checkout. On a clean copy of
# the tree (the files git knows, no build directories):
#   1. cmake --install into a temporary prefix, and the list of what landed;
#      a LuaJIT build installed into the same prefix, beside it, clobbering nothing;
#   2. the C host (tests/embed/host.c) and the C++ host (host.cpp) compiled against the
#      installed tree with pkg-config and with find_package(mpe), and run;
#   3. luarocks make --tree T for Lua 5.4 and for LuaJIT, then require "mpe" from the
#      interpreter with only the tree's paths, and the tree's command;
#   4. cpack -G DEB: the .deb installs with dpkg -i, mpe run and lua5.4 -e 'require "mpe"'
#      work with default paths, man finds the pages, and dpkg -r removes every file;
#   5. man -l renders every page without a warning; the installed completion script is
#      what `mpe completion bash` prints; the versions agree.
# Needs: cmake, pkg-config, gcc, g++, lua5.4, liblua5.4-dev, luajit, libluajit-5.1-dev,
# luarocks, man-db, groff-base, dpkg (.ci/run installs them).
# SPDX-License-Identifier: MIT
set -euo pipefail
SRC=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
JOBS=$(nproc 2>/dev/null || echo 2)
W=$(mktemp -d /tmp/mpe-package.XXXXXX)
deb_installed=0
cleanup() {
    if ((deb_installed)); then dpkg -r mpe >/dev/null 2>&1 || true; fi
    rm -rf "$W"
}
trap cleanup EXIT
step() { printf '\n---- %s\n' "$*"; }
die() { echo "package.sh: FAIL: $*" >&2; exit 1; }
quiet() { # run a command, showing its output only if it fails
    local log
    log=$(mktemp)
    if ! "$@" >"$log" 2>&1; then cat "$log" >&2; rm -f "$log"; die "command failed: $*"; fi
    rm -f "$log"
}

# A clean copy of the tree: what git tracks plus new files it does not ignore.
copy_tree() { # DEST
    mkdir -p "$1"
    if git -C "$SRC" rev-parse --git-dir >/dev/null 2>&1; then
        (cd "$SRC" && git ls-files -z -co --exclude-standard | xargs -0 cp --parents -t "$1")
    else
        (cd "$SRC" && tar --exclude='./build*' -cf - .) | (cd "$1" && tar -xf -)
    fi
}
V=$(sed -n 's/^project(mpe VERSION \([0-9.]*\) .*/\1/p' "$SRC/CMakeLists.txt")
[[ -n $V ]] || die "no version in CMakeLists.txt"
echo "mpe $V; work directory $W"

# ---- 1. cmake --install into a temporary prefix ----------------------------------------
step "1. cmake --install (Lua 5.4, configured for /usr, installed into a temporary prefix)"
copy_tree "$W/src"
P=$W/prefix
quiet cmake -S "$W/src" -B "$W/b54" -DCMAKE_BUILD_TYPE=Release -DBUILD_TESTING=OFF -DCMAKE_INSTALL_PREFIX=/usr
quiet cmake --build "$W/b54" -j"$JOBS"
quiet cmake --install "$W/b54" --prefix "$P"
(cd "$P" && find . \( -type f -o -type l \) | sort) | tee "$W/landed54"
MA=$(pkg-config --variable=deb_host_multiarch lua5.4 2>/dev/null || gcc -print-multiarch)
LIB=lib/$MA
for f in bin/mpe "$LIB/lua/5.4/mpe.so" "$LIB/liblua5.4-mpe.so.${V%.*}" "$LIB/liblua5.4-mpe.so" \
         "$LIB/liblua5.4-mpe.a" include/mpe/mpe.h include/mpe/mpe_version.h \
         "$LIB/pkgconfig/lua5.4-mpe.pc" "$LIB/pkgconfig/mpe.pc" "$LIB/cmake/mpe/mpeConfig.cmake" \
         "$LIB/cmake/mpe/mpe-lua5.4-targets.cmake" share/man/man1/mpe.1 share/man/man3/mpe.3 \
         share/bash-completion/completions/mpe share/doc/mpe/LICENSE share/doc/mpe/CHANGELOG.md; do
    [[ -e $P/$f ]] || die "not installed: $f"
done
soname=$(readelf -d "$P/$LIB/liblua5.4-mpe.so" | sed -n 's/.*SONAME.*\[\(.*\)\]/\1/p')
[[ $soname == "liblua5.4-mpe.so.${V%.*}" ]] || die "SONAME $soname"
echo "SONAME: $soname"

step "1b. the LuaJIT build installed into the same prefix, beside it"
(cd "$P" && find . -type f -print0 | sort -z | xargs -0 md5sum) >"$W/sums54"
quiet cmake -S "$W/src" -B "$W/bjit" -DMPE_LUA=luajit -DCMAKE_BUILD_TYPE=Release -DBUILD_TESTING=OFF \
    -DCMAKE_INSTALL_PREFIX=/usr
quiet cmake --build "$W/bjit" -j"$JOBS"
quiet cmake --install "$W/bjit" --prefix "$P"
(cd "$P" && find . \( -type f -o -type l \) | sort) >"$W/landed"
comm -13 "$W/landed54" "$W/landed" | sed 's/^/  added by LuaJIT: /'
for f in bin/mpe-luajit "$LIB/lua/5.1/mpe.so" "$LIB/libluajit-mpe.so" "$LIB/libluajit-mpe.a" \
         "$LIB/pkgconfig/luajit-mpe.pc" "$LIB/cmake/mpe/mpe-luajit-targets.cmake" \
         share/bash-completion/completions/mpe-luajit; do
    [[ -e $P/$f ]] || die "not installed by the LuaJIT build: $f"
done
# Every Lua 5.4 file is still there, with the same content (shared files are identical).
(cd "$P" && md5sum --quiet -c "$W/sums54") || die "the LuaJIT install changed a Lua 5.4 file"
grep -q "^mpe $V (Lua 5.4" <<<"$("$P/bin/mpe" version)" || die "mpe version: $("$P/bin/mpe" version)"
grep -q "^mpe $V (LuaJIT" <<<"$("$P/bin/mpe-luajit" version)" || die "mpe-luajit version"
for interp in lua5.4:5.4 luajit:5.1; do
    out=$(cd /tmp && env -u LUA_PATH -u LUA_INIT LUA_CPATH="$P/$LIB/lua/${interp#*:}/?.so" \
          "${interp%:*}" -e 'local m = require "mpe" io.write(m.version)')
    [[ $out == "$V" ]] || die "${interp%:*}: require \"mpe\" from the prefix gave '$out'"
    echo "${interp%:*}: require \"mpe\" from $P/$LIB/lua/${interp#*:}: mpe.version $out"
done

# ---- 2. C and C++ hosts against the installed tree ----------------------------------------
step "2. the C and C++ hosts, with pkg-config"
export PKG_CONFIG_PATH=$P/$LIB/pkgconfig
[[ $(pkg-config --modversion mpe) == "$V" ]] || die "pkg-config --modversion mpe"
echo "pkg-config --cflags --libs mpe: $(pkg-config --cflags --libs mpe)"
# shellcheck disable=SC2046
gcc -Wall -Werror -o "$W/host_c" "$SRC/tests/embed/host.c" $(pkg-config --cflags --libs mpe)
# shellcheck disable=SC2046
g++ -Wall -Werror -o "$W/host_cpp" "$SRC/tests/embed/host.cpp" $(pkg-config --cflags --libs mpe)
# shellcheck disable=SC2046
g++ -Wall -Werror -o "$W/host_cpp_jit" "$SRC/tests/embed/host.cpp" $(pkg-config --cflags --libs luajit-mpe)
export LD_LIBRARY_PATH=$P/$LIB
"$W/host_c" "$SRC/tests/embed/host.lua"
"$W/host_cpp"
"$W/host_cpp_jit"
grep -q "liblua5.4-mpe.so.${V%.*} => $P" <<<"$(ldd "$W/host_cpp")" || die "host_cpp does not use the installed libmpe"
grep -q "libluajit-mpe.so.${V%.*} => $P" <<<"$(ldd "$W/host_cpp_jit")" || die "host_cpp_jit: not libluajit-mpe"

step "2b. the C and C++ hosts, with find_package(mpe)"
for flavour in "" luajit; do
    quiet cmake -S "$SRC/tests/package" -B "$W/consumer$flavour" -DSRC="$SRC" -DCMAKE_PREFIX_PATH="$P" \
        -DMPE_FLAVOUR="$flavour"
    grep -h "found mpe" "$W/consumer$flavour/CMakeFiles/CMakeOutput.log" 2>/dev/null || true
    quiet cmake --build "$W/consumer$flavour" -j"$JOBS"
    "$W/consumer$flavour/host_c" "$SRC/tests/embed/host.lua"
    "$W/consumer$flavour/host_cpp"
done
grep -q libluajit-mpe <<<"$(ldd "$W/consumerluajit/host_cpp")" || die "COMPONENTS luajit did not link libluajit-mpe"
unset LD_LIBRARY_PATH PKG_CONFIG_PATH

# ---- 3. LuaRocks -----------------------------------------------------------------------------
step "3. luarocks make --tree T (Lua 5.4)"
copy_tree "$W/rock54"
(cd "$W/rock54" && quiet luarocks --lua-version 5.4 make --tree "$W/T54")
find "$W/T54/bin" "$W/T54/lib/lua" -type f | sed "s|$W/||"
out=$(cd /tmp && env -u LUA_INIT -u LUA_INIT_5_4 LUA_PATH="$W/T54/share/lua/5.4/?.lua" \
      LUA_CPATH="$W/T54/lib/lua/5.4/?.so" lua5.4 -e \
      'local m = require "mpe" assert(package.searchpath("mpe", package.cpath):find("T54", 1, true)) io.write(m.version)')
[[ $out == "$V" ]] || die "lua5.4 with the tree's paths: '$out'"
echo "lua5.4 with only the tree's paths: require \"mpe\" -> $out"
"$W/T54/bin/mpe" run "$SRC/scripts/examples/doubler.lua" | tail -n 2

step "3b. luarocks make --tree T (LuaJIT, the 5.1 ABI)"
copy_tree "$W/rockjit"
(cd "$W/rockjit" && quiet luarocks --lua-version 5.1 make --tree "$W/TJ" LUA_INCDIR=/usr/include/luajit-2.1)
find "$W/TJ/bin" "$W/TJ/lib/lua" -type f | sed "s|$W/||"
out=$(cd /tmp && env -u LUA_INIT LUA_PATH="$W/TJ/share/lua/5.1/?.lua" LUA_CPATH="$W/TJ/lib/lua/5.1/?.so" \
      luajit -e 'local m = require "mpe" local p = m.pool(2) local r = p:map(function(x) return x * 2 end, {1, 2})
                 p:close() p:join() io.write(m.version, " ", r[1] + r[2])')
[[ $out == "$V 6" ]] || die "luajit with the tree's paths: '$out'"
echo "luajit with only the tree's paths: require \"mpe\", a pool -> $out"
"$W/TJ/bin/mpe-luajit" version

# ---- 4. the Debian package -------------------------------------------------------------------
step "4. cpack -G DEB, dpkg -i, use, dpkg -r"
(cd "$W/b54" && quiet cpack -G DEB)
deb=$(ls "$W"/b54/mpe_*.deb)
dpkg-deb -I "$deb" | sed -n 's/^ \(Package\|Version\|Depends\|Architecture\):/  \1:/p'
[[ $(dpkg-deb -f "$deb" Version) == "$V" ]] || die "the .deb's version is not $V"
if grep -q "install ok installed" <<<"$(dpkg-query -W -f='${Status}' mpe 2>/dev/null)"; then
    die "a package mpe is already installed: not replacing it (dpkg -r mpe first)"
fi
[[ ! -e /usr/bin/mpe ]] || die "/usr/bin/mpe exists outside a package: not overwriting it"
deb_installed=1
quiet dpkg -i "$deb"
(cd /tmp && env -u LUA_PATH -u LUA_CPATH mpe run "$SRC/scripts/examples/doubler.lua") | tail -n 2
out=$(cd /tmp && env -u LUA_PATH -u LUA_CPATH lua5.4 -e 'local m = require "mpe" io.write(m.version, " ", package.searchpath("mpe", package.cpath))')
echo "lua5.4 with default paths: $out"
[[ $out == "$V /usr/lib/$MA/lua/5.4/mpe.so" ]] || die "lua5.4 -e 'require \"mpe\"' with default paths: '$out'"
[[ $(pkg-config --modversion mpe) == "$V" ]] || die "pkg-config mpe after dpkg -i"
if grep -qs '^path-exclude=/usr/share/man' /etc/dpkg/dpkg.cfg.d/*; then
    echo "note: dpkg excludes /usr/share/man on this machine (a minimal image): man -w not checked"
else
    man -w mpe >/dev/null && man -w 3 mpe >/dev/null || die "man does not find mpe(1) and mpe(3)"
fi
mapfile -t files < <(dpkg -L mpe | while read -r f; do [[ -f $f || -L $f ]] && echo "$f"; done)
echo "  the package holds ${#files[@]} files"
quiet dpkg -r mpe
deb_installed=0
for f in "${files[@]}"; do [[ ! -e $f ]] || die "left after dpkg -r: $f"; done
echo "dpkg -r mpe: every file removed"

# ---- 5. man pages, completion, versions ------------------------------------------------------
step "5. man -l, completion, versions"
for page in "$SRC"/man/*.[0-9]; do
    warn=$(MANWIDTH=80 man --warnings -l "$page" 2>&1 >/dev/null)
    [[ -z $warn ]] || die "man -l $page warns: $warn"
    lines=$(MANWIDTH=80 man -l "$page" 2>/dev/null | wc -l)
    ((lines > 40)) || die "man -l $page renders only $lines lines"
    for section in NAME SYNOPSIS DESCRIPTION ENVIRONMENT EXAMPLES "SEE ALSO"; do
        grep -q "^$section" <<<"$(MANWIDTH=80 man -l "$page" 2>/dev/null)" || die "$page has no $section section"
    done
    echo "man -l $(basename "$page"): $lines lines"
done
grep -q "^EXIT STATUS" <<<"$(MANWIDTH=80 man -l "$SRC/man/mpe.1" 2>/dev/null)" || die "mpe.1 has no EXIT STATUS"
cmp <("$P/bin/mpe" completion bash) "$P/share/bash-completion/completions/mpe" ||
    die "the installed completion script is not what mpe completion bash prints"
grep -q "^Version: $V\$" "$P/$LIB/pkgconfig/lua5.4-mpe.pc" || die "pkg-config version"
[[ -f $SRC/mpe-$V-1.rockspec ]] || die "no mpe-$V-1.rockspec"
echo "version $V: command, module, pkg-config, CMake package, rockspec, .deb agree"
echo
echo "package.sh: ok"
