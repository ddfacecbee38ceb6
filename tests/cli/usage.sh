#!/usr/bin/env bash
# tests/cli/usage.sh -- one command-line behaviour for every subcommand (run, -e,
# map, scale, version, help, completion): `mpe SUB --help`, `-h` and `mpe help SUB`
# print the same help on stdout with status 0; an unknown option prints two
# lines on stderr (the error, then the usage with "(more: mpe help SUB)") with
# status 2; -v/--version; and the bash completion script completes what the
# option tables hold.
# SPDX-License-Identifier: MIT
set -u
# shellcheck source=lib/check.sh
source "$(dirname "${BASH_SOURCE[0]}")/lib/check.sh"
MPE=${MPE_BIN:?set MPE_BIN to the mpe binary}
tmp=$(mktemp -d)
trap 'rm -rf "$tmp"' EXIT
cd "$tmp" || exit 1
run() { # ARGS...: sets rc, out, err
    timeout 60 "$MPE" "$@" </dev/null >out 2>err
    rc=$?
    out=$(cat out)
    err=$(cat err)
}

for sub in run -e map scale version help completion; do
    # the word that selects the subcommand, and its usage line's start
    if [[ $sub == -e ]]; then usage="usage: mpe [-j N] -e CODE"; else usage="usage: mpe $sub"; fi
    run help "$sub"
    check "help $sub: status" 0 "$rc"
    check "help $sub: usage first" "$usage" "${out:0:${#usage}}"
    check "help $sub: nothing on stderr" "" "$err"
    check "help $sub: has exit statuses" 1 "$(grep -c '^exit status' out)"
    help=$out
    if [[ $sub == -e ]]; then
        run -h
        check "-h: the overview" "usage: mpe run" "${out:0:14}"
        run --help
        check "--help: the overview" "usage: mpe run" "${out:0:14}"
        run -q -e 'print(1)'
        bad_prefix="mpe: "
    else
        for flag in --help -h; do
            run "$sub" "$flag"
            check "$sub $flag: status" 0 "$rc"
            check "$sub $flag: same as help $sub" "$help" "$out"
        done
        run "$sub" --frobnicate x
        bad_prefix="mpe $sub: "
    fi
    check "$sub bad option: status" 2 "$rc"
    check "$sub bad option: two lines" 2 "$(wc -l <err)"
    check "$sub bad option: the error" "${bad_prefix}unknown option '$([[ $sub == -e ]] && echo -q || echo --frobnicate)'" \
        "$(head -n 1 err)"
    check "$sub bad option: the usage" "$usage" "$(sed -n 2p err | cut -c1-${#usage})"
    check "$sub bad option: the hint" 1 "$(sed -n 2p err | grep -c "(more: mpe help $sub)\$")"
    check "$sub bad option: no stdout" "" "$out"
done

# Words after run's script are the script's, options included.
printf 'print(#arg, arg[1], arg[2])\n' >a.lua
run run a.lua --help -v
check "run a.lua --help -v: status" 0 "$rc"
check "run a.lua --help -v: the script's arguments" "2	--help	-v" "$out"
# --jobs=N, -jN and --jobs N are one option; -j 0 is accepted (pools run inline).
for form in "--jobs=3" "-j3" "--jobs 3"; do
    # shellcheck disable=SC2086
    out=$(echo 'print(os.getenv("MPE_WORKERS"))' | timeout 60 "$MPE" run $form -)
    check "run $form: MPE_WORKERS" 3 "$out"
done
out=$(echo 'print(os.getenv("MPE_WORKERS"))' | timeout 60 "$MPE" run -j 0 -)
check "run -j 0: accepted, MPE_WORKERS" 0 "$out"
run --bogus=1 -e 'print(1)'
check "--bogus=1: the error" "mpe: unknown option '--bogus=1'" "$(head -n 1 err)"
run map --json=yes -e x
check "map --json=yes: a flag takes no value" "mpe map: option '--json' takes no value" "$(head -n 1 err)"
run help frob
check "help frob: status" 2 "$rc"
check "help frob: the error" "mpe help: no subcommand 'frob' (one of: run, -e, map, scale, version, help, completion)" \
    "$(head -n 1 err)"
run help
check "help: the overview" "usage: mpe run" "${out:0:14}"
run version extra
check "version extra: status" 2 "$rc"
run completion zsh
check "completion zsh: status" 2 "$rc"

# -v, --version and version agree.
run version
v=$out
check "version: mpe X.Y.Z (Lua ...)" 1 "$(grep -cE '^mpe [0-9]+\.[0-9]+\.[0-9]+ \((Lua|LuaJIT) ' <<<"$v")"
for flag in -v --version; do
    run "$flag"
    check "$flag: status" 0 "$rc"
    check "$flag: as mpe version" "$v" "$out"
done

# Bash completion: source the script and complete a few command lines.
run completion bash
check "completion bash: status" 0 "$rc"
cp out mpe.bash
complete_line() { # WORDS...: the completions of the last word
    bash -c 'source ./mpe.bash; COMP_WORDS=("$@"); COMP_CWORD=$(($# - 1)); _mpe; ((${#COMPREPLY[@]})) && printf "%s\n" "${COMPREPLY[@]}"' _ "$@" |
        LC_ALL=C sort | tr '\n' ' '
}
check "complete 'mpe '" "--help --jobs --version -e -h -j -v completion help map run scale version " \
    "$(complete_line mpe '')"
check "complete 'mpe map --j'" "--jobs --json " "$(complete_line mpe map --j)"
check "complete 'mpe scale --'" "--csv --help --jobs --repeat --svg " "$(complete_line mpe scale --)"
check "complete 'mpe help s'" "scale " "$(complete_line mpe help s)"
touch data.txt
check "complete 'mpe map -f da'" "data.txt " "$(complete_line mpe map -f da)"
check "complete 'mpe map -j '" "" "$(complete_line mpe map -j '')"
check "complete 'mpe run a.'" "a.lua " "$(complete_line mpe run a.)"
# Every option a subcommand's help lists is completed.
for sub in run map scale; do
    words=$(complete_line mpe "$sub" -)
    for opt in $("$MPE" help "$sub" | grep -oE '(^|[ ,])--?[a-z][a-z-]*' | tr -d ' ,' | sort -u); do
        check "complete 'mpe $sub -': $opt" 1 "$([[ " $words " == *" $opt "* ]] && echo 1 || echo 0)"
    done
done

echo "cli/usage.sh: $pass passed, $fail failed"
[[ $fail -eq 0 ]]
