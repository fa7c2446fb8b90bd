-- lasync.context: task-local context variables (async.ContextVar), with the semantics of
-- Python's contextvars. A task starts with its spawner's values (spawn, gather, map, TaskGroup
-- children, server handlers); what it sets is never seen by its parent or its siblings. Values
-- set outside any task are the ones the main task of async.run starts with.
--
--   local request_id = async.ContextVar("request_id")
--   local _ <close> = request_id:bind("r-42")    -- for the rest of the block, in this task
--   async.spawn(function() print(request_id:get()) end)   --> r-42
--
-- The values live in the core (csrc/context.c) as one table per task that is never changed
-- once in use: set makes a new one, so spawning shares the spawner's table without copying.
local core = require("lasync.core")

local M = {}

local type, error, tostring, next = type, error, tostring, next
local setmetatable, getmetatable = setmetatable, getmetatable
local get_context, set_context, current_task = core.context, core.set_context, core.current_task
local context_enter, context_leave = core.context_enter, core.context_leave

local NIL = setmetatable({}, { __name = "lasync.context.nil" })  -- a value set to nil

local ContextVar = {}
ContextVar.__index = ContextVar
ContextVar.__name = "lasync.ContextVar"

local Token = {}
Token.__index = Token
Token.__name = "lasync.ContextVar.Token"

-- async.ContextVar(name [, default]) -> v
function M.ContextVar(name, default)
  if type(name) ~= "string" then
    error("ContextVar: name must be a string, got " .. type(name), 2)
  end
  return setmetatable({ name = name, default = default }, ContextVar)
end

-- v:get([default]) -> the value in the current context; else default, else v's default
function ContextVar:get(default)
  local ctx = get_context()
  local v = ctx and ctx[self]
  if v == nil then
    if default ~= nil then return default end
    return self.default
  end
  if v == NIL then return nil end
  return v
end

-- The current context with var set to stored (nil: unset), as a new table.
local function with(var, stored)
  local ctx = get_context()
  local new = {}
  if ctx then
    for k, v in next, ctx do new[k] = v end
  end
  new[var] = stored
  if next(new) == nil then new = nil end
  set_context(new)
end

local function check_var(self, what)
  if getmetatable(self) ~= ContextVar then
    error("ContextVar:" .. what .. ": call it as v:" .. what .. "(...)", 3)
  end
end

-- v:set(value) -> token, for v:reset(token)
function ContextVar:set(value)
  check_var(self, "set")
  local ctx = get_context()
  local old = ctx and ctx[self]
  if value == nil then value = NIL end
  with(self, value)
  return setmetatable({ var = self, old = old, task = current_task() or false, used = false },
                      Token)
end

-- v:reset(token): v's value becomes what it was before the v:set that made token
function ContextVar:reset(token)
  check_var(self, "reset")
  if getmetatable(token) ~= Token then
    error("ContextVar:reset: expected a token of ContextVar:set, got " .. type(token), 2)
  end
  if token.var ~= self then
    error("ContextVar:reset: the token was made by another ContextVar ('" .. token.var.name
          .. "')", 2)
  end
  if token.used then error("ContextVar:reset: the token has already been used", 2) end
  if token.task ~= (current_task() or false) then
    error("ContextVar:reset: the token was made in another task", 2)
  end
  token.used = true
  with(self, token.old)
end

-- For lasync.flow, which sets a variable around every call: v:_enter(value) -> prev, ctx (v is
-- value from now on, in a new context ctx; prev is the context before), and
-- v:_exit(prev, ctx, old): v is back to old (its value in prev, as stored); when nothing else
-- was set meanwhile, prev itself becomes the context again (no copy).
function ContextVar:_enter(value)
  if value == nil then value = NIL end
  return context_enter(self, value)
end

function ContextVar:_exit(prev, ctx, old)
  if context_leave(prev, ctx) then return end
  with(self, old)  -- the call set other variables meanwhile: they stay, as in Python
end

-- v:_raw() -> v's value as stored in the current context (nil: unset), for v:_exit
function ContextVar:_raw()
  local ctx = get_context()
  return ctx and ctx[self]
end

local Binding = { __name = "lasync.ContextVar.binding" }
Binding.__index = Binding
function Binding:__close()
  self.var:reset(self.token)
end

-- local _ <close> = v:bind(value): v is value in this task until the block ends
function ContextVar:bind(value)
  check_var(self, "bind")
  return setmetatable({ var = self, token = self:set(value) }, Binding)
end

function ContextVar:__tostring()
  return "lasync.ContextVar '" .. tostring(self.name) .. "'"
end

return M
