-- docs/check_examples.lua: runs every code example of the documentation.
--
--   lua5.4 docs/check_examples.lua [-v] [file.md | example.lua ...]
--
-- Run it from the root of the checkout after `make`. Without file arguments it checks
-- docs/*.md, docs/api/*.md and examples/*.lua (not examples/embed/).
--
-- Rules for writers of docs/*.md and docs/api/*.md:
-- * Every ```lua block is a complete script. It is written to a temporary file and run with
--   `timeout 10 build/lasync FILE` from the root of the checkout. It passes when it exits with
--   status 0 and writes nothing to stderr (so an example that lets a task's error go unobserved
--   fails: the interpreter reports it through `warn`).
-- * A block whose first line is `-- (fragment)` is not run: use it sparingly, for code that
--   only makes sense inside a larger program.
-- * A block whose first line is `-- (plain lua5.4)` is run with `lua5.4` instead of the
--   interpreter (package.path and package.cpath are not set for it: the block sets them).
-- * A block whose first line is `-- (file NAME.lua)` is written as NAME.lua into a temporary
--   directory and run from there as `build/lasync NAME.lua`, so that file names in its output
--   (tracebacks, async.dump) are predictable.
-- * A ```text block that directly follows a runnable ```lua block (blank lines may separate
--   them) is that block's expected standard output, compared line by line (trailing spaces
--   ignored). Keep such output free of addresses and timings.
-- Each file in examples/ must likewise exit 0 with an empty stderr.
-- CHECK_TIMEOUT=seconds in the environment changes the time limit per example (default 10).
local TIMEOUT = tonumber(os.getenv("CHECK_TIMEOUT")) or 10

local C = dofile((arg[0]:match("^(.*)/") or ".") .. "/check_common.lua")
local list, read = C.list, C.read
local verbose, targets = C.args(arg)

local function exists(path)
  local f = io.open(path, "r")
  if f then f:close() end
  return f ~= nil
end

if not exists("build/lasync") then
  io.stderr:write("check_examples: build/lasync not found: run `make` in the root of the checkout\n")
  os.exit(2)
end

if #targets == 0 then
  for _, f in ipairs(list("ls docs/*.md 2>/dev/null")) do targets[#targets + 1] = f end
  for _, f in ipairs(list("ls docs/api/*.md 2>/dev/null")) do targets[#targets + 1] = f end
  for _, f in ipairs(list("ls examples/*.lua 2>/dev/null")) do targets[#targets + 1] = f end
end

local function write(path, s)
  local f = assert(io.open(path, "wb"))
  f:write(s)
  f:close()
end

local function lines_of(s)
  local out = {}
  for line in (s .. "\n"):gmatch("(.-)\r?\n") do out[#out + 1] = (line:gsub("%s+$", "")) end
  while #out > 0 and out[#out] == "" do out[#out] = nil end
  return out
end

-- Extracts the code blocks of a Markdown file: {lang =, line =, text =} in order.
local function blocks_of(path)
  local blocks, cur = {}, nil
  local n = 0
  for line in (read(path) .. "\n"):gmatch("(.-)\r?\n") do
    n = n + 1
    if cur then
      if line:match("^%s*```%s*$") then
        blocks[#blocks + 1] = cur
        cur = nil
      else
        cur.lines[#cur.lines + 1] = line
      end
    else
      local lang = line:match("^%s*```%s*([%w_+-]*)")
      if lang then
        cur = { lang = lang, line = n, lines = {} }
      elseif line:match("%S") then
        blocks[#blocks + 1] = { lang = "prose", line = n, lines = {} }
      end
    end
  end
  if cur then error(path .. ":" .. cur.line .. ": unterminated code block") end
  return blocks
end

local tmp = os.tmpname()
local cwd = list("pwd")[1]
local out_file, err_file = tmp .. ".out", tmp .. ".err"

local function sh_quote(s)
  return "'" .. s:gsub("'", "'\\''") .. "'"
end

-- Runs a script file (in directory dir, if given); returns ok, stdout, stderr, status.
local function run_file(path, interpreter, dir)
  local cmd = ("timeout %d %s %s >%s 2>%s </dev/null"):format(TIMEOUT, interpreter, sh_quote(path),
                                                              out_file, err_file)
  if dir then cmd = "cd " .. sh_quote(dir) .. " && " .. cmd end
  local _, _, status = os.execute(cmd)
  local out, err = read(out_file), read(err_file)
  return status == 0 and err == "", out, err, status
end

local checked, failures, skipped = 0, {}, 0

local function report(where, why, out, err)
  failures[#failures + 1] = where
  io.write("FAIL ", where, ": ", why, "\n")
  if out and out ~= "" then io.write("  stdout:\n    ", (out:gsub("\n", "\n    ")), "\n") end
  if err and err ~= "" then io.write("  stderr:\n    ", (err:gsub("\n", "\n    ")), "\n") end
end

local function check_run(where, path, interpreter, expected, dir)
  checked = checked + 1
  local ok, out, err, status = run_file(path, interpreter, dir)
  if not ok then
    local why = status == 124 and ("timed out after " .. TIMEOUT .. " s")
                or status ~= 0 and ("exit status " .. tostring(status))
                or "wrote to stderr"
    return report(where, why, out, err)
  end
  if expected then
    local got, want = lines_of(out), lines_of(expected)
    for i = 1, math.max(#got, #want) do
      if got[i] ~= want[i] then
        return report(where, ("output line %d is %q, expected %q"):format(i, got[i] or "(none)",
                                                                      want[i] or "(none)"), out)
      end
    end
  end
  if verbose then io.write("ok   ", where, "\n") end
end

local script = tmp .. ".lua"
for _, target in ipairs(targets) do
  if target:match("%.md$") then
    local blocks = blocks_of(target)
    for i, b in ipairs(blocks) do
      if b.lang == "lua" then
        local first = b.lines[1] or ""
        local where = target .. ":" .. b.line
        if first:match("^%-%- %(fragment%)") then
          skipped = skipped + 1
          if verbose then io.write("skip ", where, " (fragment)\n") end
        else
          local nxt = blocks[i + 1]
          local expected = nxt and nxt.lang == "text" and table.concat(nxt.lines, "\n") or nil
          local interpreter = first:match("^%-%- %(plain lua5%.4%)") and "lua5.4" or "build/lasync"
          local name = first:match("^%-%- %(file ([%w_.-]+%.lua)%)")
          if name then
            local dir = tmp .. ".d"
            os.execute("mkdir -p " .. sh_quote(dir))
            write(dir .. "/" .. name, table.concat(b.lines, "\n") .. "\n")
            check_run(where, name, cwd .. "/build/lasync", expected, dir)
            os.remove(dir .. "/" .. name)
            os.remove(dir)
          else
            write(script, table.concat(b.lines, "\n") .. "\n")
            check_run(where, script, interpreter, expected)
          end
        end
      end
    end
  else
    check_run(target, target, "build/lasync", nil)
  end
end

os.remove(tmp)
os.remove(script)
os.remove(out_file)
os.remove(err_file)

io.write(("%d example(s) run, %d fragment(s) skipped, %d failure(s)\n"):format(
  checked, skipped, #failures))
os.exit(#failures == 0 and 0 or 1)
