#!/usr/bin/env bash
# tests/cli/exports.sh -- the `mpe` command exports the whole Lua API to the C
# modules a script requires. When it links Lua statically (CMakeLists.txt,
# "link setup of the mpe command"), every function and variable that the
# shared Lua library (liblua5.4.so.0 or libluajit-5.1.so.2) exports must be
# defined in the command's dynamic symbol table: a module may call any of
# them, not only those mpe uses. When it links the shared library, that
# library provides them. tests/spec/cmodule_spec.lua loads such a module.
# SPDX-License-Identifier: MIT
# Needs env MPE_BIN (ctest sets it), nm and ldd.
set -u
# shellcheck source=lib/check.sh
source "$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)/lib/check.sh"

MPE=${MPE_BIN:?set MPE_BIN to the mpe binary}

if [[ $("$MPE" version) == *LuaJIT* ]]; then soname=libluajit-5.1.so.2; else soname=liblua5.4.so.0; fi
# The library's path, as the dynamic linker would find it.
lib=$(ldconfig -p | awk -v s="$soname" '$1 == s && /x86-64|x32|64bit/ { print $NF; exit }')
[[ -n "$lib" ]] || lib=$(ldconfig -p | awk -v s="$soname" '$1 == s { print $NF; exit }')
if [[ -z "$lib" || ! -e "$lib" ]]; then
    echo "exports.sh: $soname not found by ldconfig" >&2
    exit 1
fi

# The defined dynamic symbols of a file (functions, data), without versions.
defined() { nm -D --defined-only "$1" | awk '$2 ~ /^[TtDdBbRrWwVvi]$/ { sub(/@.*/, "", $3); print $3 }' | sort -u; }

want=$(defined "$lib")
nwant=$(grep -c . <<<"$want")
if [[ $nwant -lt 100 ]]; then
    bad "the Lua library's exports" "only $nwant symbols found in $lib"
fi

if ldd "$MPE" | grep -q "$soname"; then
    # Linked against the shared library: it provides the API to modules too.
    ok
    echo "exports.sh: $MPE links $soname dynamically"
else
    have=$(defined "$MPE")
    missing=$(comm -23 <(echo "$want") <(echo "$have"))
    if [[ -z "$missing" ]]; then
        ok
    else
        mapfile -t first < <(head -20 <<<"$missing")
        bad "the mpe command exports every symbol of $soname" \
            "missing $(grep -c . <<<"$missing") of $nwant:" "${first[@]}"
    fi
fi

echo "cli/exports.sh: $pass passed, $fail failed"
[[ $fail -eq 0 ]]
