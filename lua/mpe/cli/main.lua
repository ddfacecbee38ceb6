-- mpe.cli.main -- the mpe command's command line: which subcommand, its
-- options (through mpe.cli.args, like map and scale), `mpe help [SUB]`, the
-- overview, and the bash completion script generated from the same specs.
-- SPDX-License-Identifier: MIT
--
-- cli.c calls M.parse(words) with argv[1..] before it runs anything, and acts
-- on the table it returns (see M.parse). map and scale parse their own words
-- (mpe.cli.map, mpe.cli.scale) with their specs, which are listed here for
-- help and completion. Written for Lua 5.4 and LuaJIT alike.
local args = require "mpe.cli.args"

local M = {}

local jobs = { "-j", "--jobs", value = "N", key = "workers", check = args.workers,
               missing = "-j needs a worker count from 0 to 1024" }

local JOBS_HELP = [[
  -j N, --jobs N  default number of workers for pools (exported as env MPE_WORKERS;
                  0: pools run their tasks inline, in the calling process)]]

M.specs = {
  run = {
    name = "run",
    usage = "mpe run [-j N] script.lua [args...]",
    help = [[
  Runs a Lua script ('-': read from stdin) with require "mpe" available. The
  global arg and the main chunk's ... are set as lua5.4 sets them. Words after
  the script are its own, options included.
options:
]] .. JOBS_HELP .. [[

  -h, --help      print this help
exit status: 0 ok, 1 the script failed (mpe: <message> and a traceback on
stderr), n after os.exit(n), 2 usage, 130/143 after SIGINT/SIGTERM]],
    stop = true,
    options = { jobs },
  },
  ["-e"] = {
    name = "mpe",
    topic = "-e",
    usage = "mpe [-j N] -e CODE [-e CODE...] [args...]",
    help = [[
  Runs strings of Lua code in order, with require "mpe" available; the words
  after the options are their ... and arg[1..].
options:
  -e CODE         a string of Lua code (may repeat)
]] .. JOBS_HELP .. [[

  -v, --version   print the version
  -h, --help      print the overview of every subcommand
exit status: 0 ok, 1 the code failed, n after os.exit(n), 2 usage]],
    stop = true,
    options = { jobs, { "-e", value = "CODE", key = "code", list = true,
                        missing = "-e needs a string of Lua code" },
                { "-v", "--version" } },
  },
  version = {
    name = "version",
    usage = "mpe version",
    help = [[
  Prints mpe's version and the Lua it runs on, as -v and --version do.
exit status: 0]],
    options = {},
  },
  help = {
    name = "help",
    usage = "mpe help [SUBCOMMAND]",
    help = [[
  Prints the help of SUBCOMMAND (run, -e, map, scale, version, help,
  completion), or the overview of all of them; `mpe SUBCOMMAND --help` does
  the same.
exit status: 0, 2 for an unknown subcommand]],
    options = {},
  },
  completion = {
    name = "completion",
    usage = "mpe completion bash",
    help = [[
  Prints the bash completion script for mpe and mpe-luajit (installed as
  share/bash-completion/completions/mpe). To try it: source <(mpe completion bash)
exit status: 0, 2 for another shell]],
    options = {},
  },
}
M.order = { "run", "-e", "map", "scale", "version", "help", "completion" }

local OVERVIEW = [[
usage: mpe run [-j N] script.lua [args...]   run a script ('-' reads it from stdin)
       mpe [-j N] -e CODE [args...]          run a string of Lua code (-e may repeat)
       mpe map [-j N] [--unordered] (-e CODE | -f FILE) [INPUT...]
                                             apply a Lua function to each input line
       mpe scale [-j 1,2,4] [--repeat R] [--svg FILE] [--csv FILE] script.lua [args...]
                                             run a workload at several worker counts
       mpe version, mpe -v, mpe --version    print the version
       mpe help [SUBCOMMAND]                 print this help, or a subcommand's
       mpe completion bash                   print the bash completion script
  mpe SUBCOMMAND --help prints a subcommand's options.
options:
  -j N   default number of workers for pools (exported as env MPE_WORKERS)
  --     end of options
environment: MPE_WORKERS (default pool size), MPE_PROGRESS (progress bars)
exit status: 0 ok, 1 the script failed, 2 usage]]

function M.overview(out)
  out:write(OVERVIEW, "\n")
end

-- The spec of subcommand name (map and scale from their modules), or nil.
function M.spec(name)
  if name == "map" or name == "scale" then return require("mpe.cli." .. name).spec end
  return M.specs[name]
end

-- ---- bash completion ----------------------------------------------------------------

-- The option words of spec, and those that take a value (file: completed as paths).
local function words_of(spec)
  local all, valued, files = { "-h", "--help" }, {}, {}
  for _, opt in ipairs(spec.options) do
    for k = 1, 2 do
      local w = opt[k]
      if w then
        all[#all + 1] = w
        if opt.value then
          valued[#valued + 1] = w
          if opt.value == "FILE" then files[#files + 1] = w end
        end
      end
    end
  end
  return table.concat(all, " "), table.concat(valued, " "), table.concat(files, " ")
end

function M.completion()
  local subs, cases = {}, {}
  for _, name in ipairs(M.order) do
    if name ~= "-e" then subs[#subs + 1] = name end
    local all, valued, files = words_of(M.spec(name))
    local pattern = name == "-e" and "-*" or name
    cases[#cases + 1] = string.format('        %s) opts="%s" valued="%s" files="%s" ;;',
                                      pattern, all, valued, files)
  end
  local top = table.concat(subs, " ") .. " -e -j --jobs -v --version -h --help"
  return table.concat({
    "# bash completion for mpe (and mpe-luajit), generated by `mpe completion bash`",
    "# from the command's own option tables (lua/mpe/cli/).",
    "_mpe() {",
    "    local cur=${COMP_WORDS[COMP_CWORD]} prev=${COMP_WORDS[COMP_CWORD-1]}",
    "    local opts valued files",
    "    COMPREPLY=()",
    "    if ((COMP_CWORD == 1)); then",
    '        COMPREPLY=($(compgen -W "' .. top .. '" -- "$cur"))',
    "        return",
    "    fi",
    '    case ${COMP_WORDS[1]} in',
    table.concat(cases, "\n"),
    "        *) return ;;",
    "    esac",
    '    if [[ ${COMP_WORDS[1]} == help ]]; then',
    '        ((COMP_CWORD == 2)) && COMPREPLY=($(compgen -W "' .. table.concat(M.order, " ") .. '" -- "$cur"))',
    "        return",
    "    fi",
    '    if [[ ${COMP_WORDS[1]} == completion ]]; then',
    '        ((COMP_CWORD == 2)) && COMPREPLY=($(compgen -W "bash" -- "$cur"))',
    "        return",
    "    fi",
    '    if [[ " $valued " == *" $prev "* ]]; then',
    '        [[ " $files " == *" $prev "* ]] && COMPREPLY=($(compgen -f -- "$cur"))',
    "        return",
    "    fi",
    '    if [[ $cur == -* ]]; then',
    '        COMPREPLY=($(compgen -W "$opts" -- "$cur"))',
    "    else",
    '        COMPREPLY=($(compgen -f -- "$cur"))',
    "    fi",
    "}",
    "complete -o filenames -o bashdefault -F _mpe mpe mpe-luajit",
    "",
  }, "\n")
end

-- ---- the command line ---------------------------------------------------------------

local function help_of(name)
  local spec = M.spec(name)
  if spec then return args.help(spec) end
  return args.fail(M.specs.help, "no subcommand '" .. name .. "' (one of: " ..
                   table.concat(M.order, ", ") .. ")")
end

-- A subcommand that takes no words beyond its options.
local function bare(spec, words)
  local o, status = args.parse(spec, words, 2)
  if not o then return nil, status end
  if #o.positional > 0 then
    return nil, args.fail(spec, "unexpected argument '" .. o.positional[1] .. "'")
  end
  return o
end

-- Parse the command line words (argv[1..]). Returns what cli.c does next:
--   { status = n }                 done (help printed, or a usage error): exit n
--   { version = true }             print the version
--   { module = "mpe.cli.map" }     run that module's main with the words after it
--   { script = i, workers = w }    mpe run: argv[i] is the script, argv[i+1..] its arguments
--   { code = {s, ...}, first = i, workers = w }
--                                  -e: run the strings in order; arguments from argv[first]
-- workers (or nil) is the -j count, for env MPE_WORKERS.
function M.parse(words)
  local cmd = words[1]
  if cmd == nil then
    M.overview(io.stderr)
    return { status = 2 }
  end
  if cmd == "map" or cmd == "scale" then return { module = "mpe.cli." .. cmd } end
  if cmd == "version" then
    local o, status = bare(M.specs.version, words)
    if not o then return { status = status } end
    return { version = true }
  end
  if cmd == "completion" then
    local spec = M.specs.completion
    local o, status = args.parse(spec, words, 2)
    if not o then return { status = status } end
    if o.positional[1] ~= "bash" or #o.positional > 1 then
      return { status = args.fail(spec, "give the shell: bash (the one supported)") }
    end
    io.stdout:write(M.completion())
    return { status = 0 }
  end
  if cmd == "help" then
    local spec = M.specs.help
    if words[2] == "-e" then words[2] = "--" table.insert(words, 3, "-e") end  -- a topic, not an option
    local o, status = args.parse(spec, words, 2)
    if not o then return { status = status } end
    if #o.positional > 1 then
      return { status = args.fail(spec, "unexpected argument '" .. o.positional[2] .. "'") }
    end
    if o.positional[1] then return { status = help_of(o.positional[1]) } end
    M.overview(io.stdout)
    return { status = 0 }
  end
  if cmd == "run" then
    local spec = M.specs.run
    local o, status = args.parse(spec, words, 2)
    if not o then return { status = status } end
    if o.next > #words then
      return { status = args.fail(spec, "give the script to run (or '-' for stdin)") }
    end
    return { script = o.next, workers = o.workers }
  end
  if cmd:sub(1, 1) == "-" and cmd ~= "-" then
    if cmd == "-h" or cmd == "--help" then
      M.overview(io.stdout)
      return { status = 0 }
    end
    local spec = M.specs["-e"]
    local o, status = args.parse(spec, words, 1)
    if not o then return { status = status } end
    if o.version then return { version = true } end
    if not o.code then
      return { status = args.fail(spec, "nothing to run: give -e CODE, or use 'mpe run script.lua'") }
    end
    return { code = o.code, first = o.next, workers = o.workers }
  end
  local msg = "unknown command '" .. cmd .. "'"
  if cmd:match("%.lua$") then msg = msg .. " (to run a script: mpe run " .. cmd .. ")" end
  io.stdout:flush()
  io.stderr:write("mpe: ", msg, "\n", "usage: mpe SUBCOMMAND ... (run, map, scale, version, " ..
                  "help, completion) or mpe -e CODE  (more: mpe help)\n")
  return { status = 2 }
end

return M
