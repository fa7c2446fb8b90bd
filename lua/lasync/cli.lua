-- lasync.cli: the command line of the `lasync` interpreter (csrc/main.c calls M.main).
-- The script runs as the main task of async.run, so its top level can await.
local M = {}

local async = require("lasync")
local core = require("lasync.core")

local USAGE = [==[
usage: lasync [options] [script [args]]
Available options are:
  -e stat   execute string 'stat'
  -i        enter interactive mode after executing 'script'
  -v        show version information
  --trace F     run the main task as a lasync.flow run: write its trace to F (Perfetto JSON)
  --report F    ... and its HTML report to F
  --log F       ... and its log (JSON lines) to F
  --progress    ... and show its progress line on stderr
  --        stop handling options
  -         execute stdin and stop handling options
]==]

local report = async._report

local function parse(argv)
  local o = { execs = {}, script = nil, script_index = nil, flow = nil }
  local i = 1
  while argv[i] do
    local a = argv[i]
    if a == "--" then
      i = i + 1
      break
    elseif a == "-" then
      break
    elseif a == "-i" then
      o.interactive = true
      o.version = true
    elseif a == "-v" then
      o.version = true
    elseif a == "--trace" or a == "--report" or a == "--log" then
      i = i + 1
      if argv[i] == nil then return nil, "'" .. a .. "' needs argument" end
      o.flow = o.flow or {}
      o.flow[a:sub(3)] = argv[i]
    elseif a == "--progress" then
      o.flow = o.flow or {}
      o.flow.progress = true
    elseif a == "-e" then
      i = i + 1
      if argv[i] == nil then return nil, "'-e' needs argument" end
      o.execs[#o.execs + 1] = argv[i]
    elseif a:sub(1, 2) == "-e" then
      o.execs[#o.execs + 1] = a:sub(3)
    elseif a:sub(1, 1) == "-" then
      return nil, "unrecognized option '" .. a .. "'"
    else
      break
    end
    i = i + 1
  end
  if argv[i] then
    o.script, o.script_index = argv[i], i
  end
  return o
end

-- arg like lua.c: arg[0] is the script, negative indices the interpreter and options
local function make_arg(argv, script_index)
  local arg = {}
  local base = script_index or #argv + 1
  for i = 0, #argv do arg[i - base] = argv[i] end
  if script_index == nil then arg[0] = nil end
  return arg
end

local function repl(interp)
  _G.async = async
  local pack, unpack = table.pack, table.unpack
  local state = { eval = nil }
  while true do
    local line = interp.read_line("> ")
    if line == nil then
      io.stdout:write("\n")
      break
    end
    local chunk, err = load("return " .. line, "=stdin")
    if not chunk then
      local src = line
      chunk, err = load(src, "=stdin")
      while not chunk and err:find("<eof>$") do  -- an incomplete statement: read more
        local more = interp.read_line(">> ")
        if more == nil then break end
        src = src .. "\n" .. more
        chunk, err = load(src, "=stdin")
      end
    end
    if chunk then
      local t = async.spawn(chunk)
      state.eval = t
      M.eval = state
      local r = pack(pcall(t.await, t))
      state.eval = nil
      if r[1] then
        if r.n > 1 then print(unpack(r, 2, r.n)) end
      elseif async.is_cancelled(r[2]) then
        io.stderr:write("interrupted\n")
      else
        io.stderr:write(t:traceback() or tostring(r[2]), "\n")
      end
      core.interrupts_rearm()
    else
      io.stderr:write(err, "\n")
    end
  end
  interp.close_stdin()
end

function M.main(argv)
  local o, perr = parse(argv)
  if not o then
    report(perr)
    io.stderr:write(USAGE)
    return 1
  end
  if o.version then print("lasync " .. async.version .. " (" .. _VERSION .. ")") end
  _G.arg = make_arg(argv, o.script_index)

  local interp = require("lasync.interp")
  if not o.script and #o.execs == 0 and not o.version then
    -- like lua: a REPL on a terminal, otherwise stdin is the script
    if interp.stdin_is_tty() then
      o.interactive = true
      print("lasync " .. async.version .. " (" .. _VERSION .. ")")
    else
      o.script = "-"
    end
  end
  local chunk, lerr
  if o.script == "-" then
    chunk, lerr = loadfile(nil)
  elseif o.script then
    chunk, lerr = loadfile(o.script)
  end
  if o.script and not chunk then
    report(lerr)
    return 1
  end

  local script_args = {}
  if o.script_index then
    for i = o.script_index + 1, #argv do script_args[#script_args + 1] = argv[i] end
  end

  -- in the REPL, Ctrl-C cancels the line being run, or says how to leave
  local function on_interrupt()
    if not o.interactive then return false end
    local e = M.eval and M.eval.eval
    if e and not e:done() then
      e:cancel("interrupted (SIGINT)")
    else
      io.stdout:write("\n(to exit, press Ctrl-D)\n> ")
      io.stdout:flush()
      core.interrupts_rearm()
    end
    return true
  end

  return (async._run_main(function()
    local _ <close> = o.flow and require("lasync.flow").session{
      name = o.script and o.script:match("[^/]*$") or "lasync", trace = o.flow.trace,
      report = o.flow.report, log = o.flow.log, progress = o.flow.progress,
    }
    for _, src in ipairs(o.execs) do
      local f, e = load(src, "=(command line)")
      if not f then error(e, 0) end
      f()
    end
    if chunk then chunk(table.unpack(script_args)) end
    if o.interactive then repl(interp) end
  end, on_interrupt))
end

return M
