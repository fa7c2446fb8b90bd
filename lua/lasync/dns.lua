-- lasync.dns: name resolution through libuv's getaddrinfo, on its thread pool (also
-- `async.dns`).
--
--   local addrs = require("lasync.dns").resolve("localhost")   --> { "127.0.0.1", "::1" }
local core = require("lasync.core")
local check = require("lasync.check")

local M = {}

local type, error = type, error
local dns_resolve = core.dns_resolve

local FAMILIES = { [4] = 4, [6] = 6, inet = 4, inet6 = 6, ipv4 = 4, ipv6 = 6 }
local RESOLVE = check.spec("dns.resolve", {
  family = check.oneof(4, 6, "inet", "inet6", "ipv4", "ipv6"),
})

-- resolve(host [, {family = 4 | 6}]) -> list of address strings, raises kind = "dns"
function M.resolve(host, opts)
  if type(host) ~= "string" then
    error("bad argument #1 to 'resolve' (string expected, got " .. type(host) .. ")", 2)
  end
  opts = check.options(RESOLVE, opts)
  return dns_resolve(host, FAMILIES[opts.family])
end

return M
