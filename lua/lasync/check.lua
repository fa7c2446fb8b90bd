-- lasync.check: the one checker of the options tables of lasync's public API, so that a
-- misspelt key or a value of the wrong type fails the same way in every module, naming the
-- function and the key, instead of being silently ignored.
--
--   local check = require("lasync.check")
--   local CLIENT = check.spec("http.client", {
--     timeout = check.seconds, base_url = check.string,
--     retry = { attempts = check.count, methods = check.names("method names") },
--   })
--   opts = check.options(CLIENT, opts, 2)   -- opts, or an empty table for nil
--
-- raises, at `level` like error() (2: the caller of the function that checks):
--   http.client: unknown option 'timout' (did you mean 'timeout'?)
--   http.client: option 'retry.methods' must be a list or set of method names, got number 3
--   http.client: options must be a table, got string
--
-- A field of a spec is a checker (below; check.type builds new ones) or a plain table, which is
-- the spec of a nested options table (checked the same way, its keys named 'outer.inner').
local M = {}

local type, pairs, ipairs, next, select = type, pairs, ipairs, next, select
local tostring, error = tostring, error
local getmetatable, setmetatable, rawequal = getmetatable, setmetatable, rawequal
local math_type, tointeger, fmt, concat = math.type, math.tointeger, string.format, table.concat
local sort = table.sort

local Checker = { __name = "lasync.check.type" }

-- check.type(what, ok) -> a checker: ok(v) is true for the values it accepts; `what` says
-- which they are, for the message ("a number >= 0").
function M.type(what, ok)
  return setmetatable({ what = what, ok = ok }, Checker)
end
local new_type = M.type

local function is_num(v) return type(v) == "number" and v == v end  -- NaN is not a number here
-- v as an integer if it is a number with an integral value (math.tointeger also converts the
-- string "1" in Lua 5.4.4), else nil
local function toint(v) return type(v) == "number" and tointeger(v) or nil end

M.any = new_type("any value", function() return true end)
M.string = new_type("a string", function(v) return type(v) == "string" end)
M.boolean = new_type("a boolean", function(v) return type(v) == "boolean" end)
M.table = new_type("a table", function(v) return type(v) == "table" end)
M.func = new_type("a function", function(v) return type(v) == "function" end)
M.callable = new_type("a function", function(v)
  if type(v) == "function" then return true end
  local mt = getmetatable(v)
  return type(mt) == "table" and mt.__call ~= nil
end)
M.seconds = new_type("a number >= 0 (seconds)", function(v) return is_num(v) and v >= 0 end)
M.positive = new_type("a number > 0", function(v) return is_num(v) and v > 0 end)
M.count = new_type("an integer >= 1", function(v)
  v = toint(v)
  return v ~= nil and v >= 1
end)
M.natural = new_type("an integer >= 0", function(v)
  v = toint(v)
  return v ~= nil and v >= 0
end)

-- check.range(lo, hi) -> integers lo..hi
function M.range(lo, hi)
  return new_type(fmt("an integer from %d to %d", lo, hi), function(v)
    v = toint(v)
    return v ~= nil and v >= lo and v <= hi
  end)
end

-- check.oneof("a", "b", ...) -> exactly one of these values
function M.oneof(...)
  local allowed, shown = {}, {}
  for i = 1, select("#", ...) do
    local v = select(i, ...)
    allowed[v] = true
    shown[i] = type(v) == "string" and ('"' .. v .. '"') or tostring(v)
  end
  return new_type("one of " .. concat(shown, ", "), function(v) return allowed[v] == true end)
end

-- check.either(a, b, ...) -> what any of the checkers accepts
function M.either(...)
  local list, whats = { ... }, {}
  for i, c in ipairs(list) do whats[i] = c.what end
  return new_type(concat(whats, " or "), function(v)
    for i = 1, #list do
      if list[i].ok(v) then return true end
    end
    return false
  end)
end

-- A list {"a", "b"} or a set {a = true, b = true} of values that `item` accepts (a member
-- whose value is false is not in the set).
local function list_or_set(item)
  return function(v)
    if type(v) ~= "table" then return false end
    for k, x in pairs(v) do
      if x == true or x == false then
        if not item(k) then return false end
      elseif not (math_type(k) == "integer" and k >= 1 and item(x)) then
        return false
      end
    end
    return true
  end
end

local function is_name(v) return type(v) == "string" and v ~= "" end
local function is_int(v) return math_type(v) == "integer" end

-- check.names(what) -> a list or a set of non-empty strings ("a list or set of method names")
function M.names(what)
  return new_type("a list or set of " .. what, list_or_set(is_name))
end

-- check.integers(what) -> a list or a set of integers ("a list or set of HTTP statuses")
function M.integers(what)
  return new_type("a list or set of " .. what, list_or_set(is_int))
end

-- check.to_set(v [, map]) -> {[map(x)] = true} for a list or set that names/integers accepted
-- (nil for nil); a set's members with the value false are left out.
function M.to_set(v, map)
  if v == nil then return nil end
  local out = {}
  for k, x in pairs(v) do
    local item
    if x == true then item = k elseif x ~= false then item = x end
    if item ~= nil then out[map and map(item) or item] = true end
  end
  return out
end

-- {====== specs ======}

local Spec = { __name = "lasync.check.spec" }

local function compile(fname, fields, prefix)
  local spec = setmetatable({ fname = fname, fields = {}, prefix = prefix }, Spec)
  for k, c in pairs(fields) do
    if getmetatable(c) == Checker then
      spec.fields[k] = c
    elseif getmetatable(c) == Spec then
      spec.fields[k] = compile(fname, c.fields, prefix .. k .. ".")
    elseif type(c) == "table" then
      spec.fields[k] = compile(fname, c, prefix .. k .. ".")
    else
      error("check.spec: field '" .. tostring(k) .. "' of " .. fname .. " is not a checker", 3)
    end
  end
  return spec
end

-- check.spec(fname, fields) -> a spec; fname names the function in messages ("http.client").
-- check.spec(fname, base, extra) -> base's fields and extra's (extra wins).
function M.spec(fname, fields, extra)
  if getmetatable(fields) == Spec then fields = fields.fields end
  if extra then
    local all = {}
    for k, c in pairs(fields) do all[k] = c end
    for k, c in pairs(extra) do all[k] = c end
    fields = all
  end
  return compile(fname, fields, "")
end

-- The value as the end of a message: "got number 3", "got string 'abc'", "got table".
local function got(v)
  local t = type(v)
  if t == "number" or t == "boolean" then return "got " .. t .. " " .. tostring(v) end
  if t == "string" then
    if #v > 40 then v = v:sub(1, 37) .. "..." end
    return fmt("got string '%s'", v)
  end
  return "got " .. t
end

-- Edit distance of two short strings (for "did you mean").
local function distance(a, b)
  local la, lb = #a, #b
  if la > 30 or lb > 30 then return 99 end
  local prev = {}
  for j = 0, lb do prev[j] = j end
  for i = 1, la do
    local cur = { [0] = i }
    local ca = a:byte(i)
    for j = 1, lb do
      local cost = ca == b:byte(j) and 0 or 1
      local d = prev[j] + 1
      if cur[j - 1] + 1 < d then d = cur[j - 1] + 1 end
      if prev[j - 1] + cost < d then d = prev[j - 1] + cost end
      cur[j] = d
    end
    prev = cur
  end
  return prev[lb]
end

-- The known key closest to an unknown one, if it is close enough to be a misspelling.
local function suggest(spec, key)
  if type(key) ~= "string" then return nil end
  local names = {}
  for k in pairs(spec.fields) do names[#names + 1] = k end
  sort(names)
  local best, bestd = nil, 3
  for _, k in ipairs(names) do
    local d = k:lower() == key:lower() and 0 or distance(key, k)
    if d < bestd and d <= #k // 2 then best, bestd = k, d end
  end
  return best
end

local function key_name(key)
  if type(key) == "string" then return key end
  return "[" .. tostring(key) .. "]"
end

local function fail(spec, msg, level)
  error(spec.fname .. ": " .. msg, level + 1)
end

local function check_fields(spec, opts, level)
  for k, v in next, opts do
    local c = spec.fields[k]
    if c == nil then
      if not (spec.array and math_type(k) == "integer") then
        local hint = suggest(spec, k)
        fail(spec, fmt("unknown option '%s%s'%s", spec.prefix, key_name(k),
                       hint and fmt(" (did you mean '%s%s'?)", spec.prefix, hint) or ""),
             level + 1)
      end
    elseif getmetatable(c) == Spec then
      if type(v) ~= "table" then
        fail(spec, fmt("option '%s%s' must be a table, %s", spec.prefix, k, got(v)), level + 1)
      end
      check_fields(c, v, level + 1)
    elseif not c.ok(v) then
      fail(spec, fmt("option '%s%s' must be %s, %s", spec.prefix, k, c.what, got(v)), level + 1)
    end
  end
end

local EMPTY = setmetatable({}, { __newindex = function() error("read-only table", 2) end })
M.EMPTY = EMPTY

-- check.options(spec, opts [, level = 2]) -> opts, or an empty (read-only) table for nil.
-- Integer keys are refused unless the spec was made with check.array(spec).
function M.options(spec, opts, level)
  level = (level or 2) + 1
  if opts == nil then return EMPTY end
  if type(opts) ~= "table" then fail(spec, "options must be a table, " .. got(opts), level) end
  if next(opts) ~= nil and not rawequal(opts, EMPTY) then check_fields(spec, opts, level) end
  return opts
end

-- check.array(spec) -> the spec, now also accepting a list part (process.spawn{cmd, arg, ...})
function M.array(spec)
  spec.array = true
  return spec
end

return M
