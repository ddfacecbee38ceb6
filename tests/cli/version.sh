#!/usr/bin/env bash
# tests/cli/version.sh -- one version everywhere: project(VERSION) in CMakeLists.txt
# (the one place it is written, generated into mpe_version.h) is what `mpe version`,
# -v, mpe.version (under mpe run and the stock interpreter), the pkg-config file,
# the CMake package, the man pages, the rockspec and CHANGELOG.md's newest entry say.
# (.ci/run checks the .deb's version.)
# SPDX-License-Identifier: MIT
set -u
MPE=${MPE_BIN:?set MPE_BIN to the mpe binary}
SRC=${MPE_SOURCE_DIR:-$(cd "$(dirname "$0")/../.." && pwd)}
BUILD=${MPE_BUILD_DIR:-$(dirname "$MPE")}
INTERP=${MPE_LUA_INTERP:-lua5.4}
# shellcheck source=lib/check.sh
source "$(dirname "${BASH_SOURCE[0]}")/lib/check.sh"

v=$(sed -n 's/^project(mpe VERSION \([0-9.]*\) .*/\1/p' "$SRC/CMakeLists.txt")
check "CMakeLists.txt has project(mpe VERSION X.Y.Z ...)" 1 "$(grep -cE '^[0-9]+\.[0-9]+\.[0-9]+$' <<<"$v")"
check "mpe_version.h" "#define MPE_VERSION_STRING \"$v\"" \
    "$(grep '^#define MPE_VERSION_STRING' "$BUILD/include/mpe_version.h")"
check "mpe version" "mpe $v" "$("$MPE" version | cut -d' ' -f1-2)"
check "mpe -v" "mpe $v" "$("$MPE" -v | cut -d' ' -f1-2)"
check "mpe.version under mpe run" "$v" "$("$MPE" -e 'io.write(require("mpe").version)')"
if [[ -z ${MPE_SANITIZE:-} ]] && command -v "$INTERP" >/dev/null; then
    check "mpe.version under $INTERP" "$v" \
        "$(LUA_CPATH="$BUILD/?.so" "$INTERP" -e 'io.write(require("mpe").version)')"
fi
pcs=("$BUILD"/pkgconfig/*-mpe.pc)
check "a pkg-config file" 1 "$([[ -f ${pcs[0]} ]] && echo 1 || echo 0)"
check "pkg-config Version" "Version: $v" "$(grep '^Version:' "${pcs[0]}")"
check "CMake package version" "set(PACKAGE_VERSION \"$v\")" \
    "$(grep -m1 -o 'set(PACKAGE_VERSION "[^"]*")' "$BUILD/mpeConfigVersion.cmake")"
rockspecs=("$SRC"/mpe-*.rockspec)
check "one rockspec at the root" 1 "${#rockspecs[@]}"
check "rockspec file name" "mpe-$v-1.rockspec" "$(basename "${rockspecs[0]}")"
check "rockspec version" "version = \"$v-1\"" "$(grep '^version' "${rockspecs[0]}")"
check "rockspec tag" "tag = \"v$v\"," "$(grep -o 'tag = .*' "${rockspecs[0]}")"
check "CHANGELOG.md's newest entry" "## $v" "$(grep -m1 '^## ' "$SRC/CHANGELOG.md" | cut -d' ' -f1-2)"
for page in "$SRC"/man/mpe.[0-9]; do
    check "$(basename "$page") .TH" "\"mpe $v\"" "$(grep -o '"mpe [0-9.]*"' "$page" | head -n1)"
done

echo "cli/version.sh: $pass passed, $fail failed"
[[ $fail -eq 0 ]]
