-- lasync.dns: name resolution through libuv's getaddrinfo, on its thread pool (also
-- `async.dns`).
--
--   local addrs = require("lasync.dns").resolve("localhost")   --> { "127.0.0.1", "::1" }
local core = require("lasync.core")

local M = {}

local type, error = type, error
local dns_resolve = core.dns_resolve

local FAMILIES = { [4] = 4, [6] = 6, inet = 4, inet6 = 6, ipv4 = 4, ipv6 = 6 }

-- resolve(host [, {family = 4 | 6}]) -> list of address strings, raises kind = "dns"
function M.resolve(host, opts)
  if type(host) ~= "string" then
    error("bad argument #1 to 'resolve' (string expected, got " .. type(host) .. ")", 2)
  end
  if opts ~= nil and type(opts) ~= "table" then
    error("bad argument #2 to 'resolve' (table expected, got " .. type(opts) .. ")", 2)
  end
  local family = nil
  if opts and opts.family ~= nil then
    family = FAMILIES[opts.family]
    if family == nil then
      error("resolve: family must be 4, 6, \"inet\" or \"inet6\", got " .. tostring(opts.family), 2)
    end
  end
  return dns_resolve(host, family)
end

return M
