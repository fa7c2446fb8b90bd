-- lasync.fs: files and directories on libuv's thread pool (also `async.fs`).
--
--   local fs = require("lasync.fs")
--   fs.write_file("/tmp/x.txt", "hello\n")
--   for line in fs.open("/tmp/x.txt"):lines() do print(line) end
--
-- Every call suspends only the calling task. The C core (csrc/fs.c) does the single
-- operations and the File object; this module composes them. Failures raise error objects
-- with kind = "fs", code = the errno name ("ENOENT"), path and syscall.
local core = require("lasync.core")
local check = require("lasync.check")

local M = {}

local type, error, pcall, ipairs, select, mtype = type, error, pcall, ipairs, select, math.type

local fs_open, fs_stat, fs_scandir = core.fs_open, core.fs_stat, core.fs_scandir
local fs_mkdir, fs_unlink, fs_rmdir, fs_rename = core.fs_mkdir, core.fs_unlink, core.fs_rmdir,
  core.fs_rename

-- argument errors name the public function and the position its caller sees
local function checkpath(fname, path, n)
  if type(path) ~= "string" then
    error(("bad argument #%d to '%s' (string expected, got %s)"):format(n or 1, fname,
      type(path)), 3)
  end
  if path:find("\0", 1, true) then
    error(("bad argument #%d to '%s' (path contains a zero byte)"):format(n or 1, fname), 3)
  end
end

local STAT = check.spec("fs.stat", { follow = check.boolean })
local MKDIR = check.spec("fs.mkdir", {
  mode = check.type("a permission mode, 0 to 0o7777", function(v)
    return mtype(v) == "integer" and v >= 0 and v <= 4095
  end),
  parents = check.boolean,
})
local REMOVE = check.spec("fs.remove", { recursive = check.boolean })

-- err is an fs error with one of the given codes (anything else, Cancelled included, is not)
local function is_code(err, a, b)
  return type(err) == "table" and err.kind == "fs" and (err.code == a or err.code == b)
end

-- io.open's modes: r, w or a, then any of +, b and x (x only after w), each at most once
local function valid_mode(mode)
  local first, rest = mode:match("^([rwa])(.*)$")
  if not first then return false end
  local seen = {}
  for c in rest:gmatch(".") do
    if seen[c] or not (c == "+" or c == "b" or (c == "x" and first == "w")) then return false end
    seen[c] = true
  end
  return true
end

function M.open(path, mode)
  checkpath("open", path)
  if mode ~= nil and (type(mode) ~= "string" or not valid_mode(mode)) then
    error("bad argument #2 to 'open' (invalid mode (expected r, w, a, r+, w+, a+, wx, w+x, "
      .. "optionally with b))", 2)
  end
  local f = fs_open(path, mode)
  return f
end

function M.rename(from, to)
  checkpath("rename", from, 1)
  checkpath("rename", to, 2)
  local ok = fs_rename(from, to)
  return ok
end

function M.stat(path, opts)
  checkpath("stat", path)
  opts = check.options(STAT, opts)
  return fs_stat(path, opts.follow ~= false)
end

function M.list_dir(path)
  checkpath("list_dir", path)
  return fs_scandir(path)
end

-- read_file and write_file are one job on the thread pool each (open, read/write, close)
function M.read_file(path)
  checkpath("read_file", path)
  return core.fs_read_file(path)
end

local function write_with(append, fname)
  local fs_write_file = core.fs_write_file
  return function(path, data, ...)
    checkpath(fname, path)
    if type(data) ~= "string" and type(data) ~= "number" then
      error(("bad argument #2 to '%s' (string expected, got %s)"):format(fname, type(data)), 2)
    end
    for i = 1, select("#", ...) do
      local v = select(i, ...)
      if type(v) ~= "string" and type(v) ~= "number" then
        error(("bad argument #%d to '%s' (string expected, got %s)"):format(i + 2, fname, type(v)),
          2)
      end
    end
    return fs_write_file(path, append, data, ...)
  end
end
M.write_file = write_with(false, "write_file")
M.append_file = write_with(true, "append_file")

-- `for line in fs.lines(path) do`: like io.lines, the file is closed when the loop ends
function M.lines(path, ...)
  checkpath("lines", path)
  local f = fs_open(path, "rb")
  local ok, it = pcall(f.lines, f, ...)
  if not ok then  -- a bad format: the file is closed, the error names fs.lines
    f:close()
    if type(it) == "string" then
      it = it:gsub("^bad argument #(%d+) to '[^']*'", "bad argument #%1 to 'lines'")
    end
    error(it, 2)
  end
  return it, nil, nil, f
end

function M.exists(path)
  checkpath("exists", path)
  local ok, err = pcall(fs_stat, path, true)
  if ok then return true end
  if is_code(err, "ENOENT", "ENOTDIR") then return false end
  error(err, 0)
end

local function dirname(path)
  local d = path:match("^(.*[^/])/+[^/]+/*$")
  if d then return d end
  return path:sub(1, 1) == "/" and "/" or "."
end

-- true if path is a directory, false if it is missing or not one; anything else (Cancelled,
-- a timeout, EACCES) is raised
local function is_dir(path, follow)
  local ok, st = pcall(fs_stat, path, follow)
  if ok then return st.type == "directory" end
  if is_code(st, "ENOENT", "ENOTDIR") then return false end
  error(st, 0)
end

-- makes path (with `mode`) and its missing parents (with the default mode)
local function mkdir_parents(path, mode)
  local ok, err = pcall(fs_mkdir, path, mode)
  if ok then return end
  if is_code(err, "EEXIST") then
    if is_dir(path, true) then return end
    error(err, 0)
  end
  if not is_code(err, "ENOENT") then error(err, 0) end
  local parent = dirname(path)
  if parent == path or parent == "." or parent == "/" then error(err, 0) end
  mkdir_parents(parent, nil)  -- the parents get the default mode, as mkdir -p does
  ok, err = pcall(fs_mkdir, path, mode)  -- another task may have made it meanwhile
  if not ok and not (is_code(err, "EEXIST") and is_dir(path, true)) then error(err, 0) end
end

function M.mkdir(path, opts)
  checkpath("mkdir", path)
  opts = check.options(MKDIR, opts)
  local mode = math.tointeger(opts.mode)
  if opts.parents then
    local p = path:gsub("/+$", "")
    mkdir_parents(p ~= "" and p or path, mode)
  else
    fs_mkdir(path, mode)
  end
  return true
end

local function remove_tree(path)
  local st = fs_stat(path, false)  -- not following links: a link is removed, not its target
  if st.type ~= "directory" then return fs_unlink(path) end
  for _, e in ipairs(fs_scandir(path)) do remove_tree(path .. "/" .. e.name) end
  return fs_rmdir(path)
end

function M.remove(path, opts)
  checkpath("remove", path)
  opts = check.options(REMOVE, opts)
  if opts.recursive then return remove_tree(path) end
  local ok, err = pcall(fs_unlink, path)
  if ok then return true end
  if is_code(err, "EISDIR", "EPERM") and is_dir(path, false) then return fs_rmdir(path) end
  error(err, 0)
end


return M
