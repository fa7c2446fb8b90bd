-- HTTPS with a certificate made at test time, and HTTP/2 multiplexing against Debian's nghttpd.
local helper = require("spec.helper")
local servers = require("spec.support.servers")
local async = helper.async
local http = require("lasync.http")

describe("lasync.http over TLS", function()
  local cert, srv
  setup(function()
    cert = servers.certificate()
    srv = servers.https(cert)
  end)
  teardown(function()
    srv.stop()
    cert.remove()
  end)

  helper.it("an unknown certificate fails verification with kind tls", function()
    local ok, err = pcall(http.get, srv.url .. "/echo")
    assert.is_false(ok)
    assert.equal("tls", err.kind, tostring(err))
    assert.equal(srv.url .. "/echo", err.url)
  end)

  helper.it("verify = false accepts it", function()
    local r = http.get(srv.url .. "/echo", { verify = false })
    assert.equal(200, r.status)
    assert.equal("GET", r:json().method)
  end)

  helper.it("ca_file = the certificate verifies it", function()
    local r = http.get(srv.url .. "/status/201", { ca_file = cert.cert })
    assert.equal(201, r.status)
  end)
end)

describe("lasync.http over HTTP/2", function()
  local dir, srv, h2c, cert
  setup(function()
    cert = servers.certificate()
    dir = os.tmpname()
    os.remove(dir)
    assert(os.execute("mkdir -p '" .. dir .. "'"))
    local f = assert(io.open(dir .. "/hello.txt", "w"))
    f:write(("hello h2\n"):rep(100))
    f:close()
    srv = servers.h2(dir, cert)
    h2c = servers.h2(dir)
  end)
  teardown(function()
    srv.stop()
    h2c.stop()
    cert.remove()
    os.execute("rm -rf '" .. dir .. "'")
  end)

  helper.it("over cleartext with prior knowledge", function()
    local r = http.get(h2c.url .. "/hello.txt", { http_version = "2" })
    assert.equal(200, r.status)
    assert.equal("2", r.http_version)
  end)

  helper.it("100 concurrent requests are multiplexed over one TLS connection", function()
    local c = http.client({ http_version = "2", ca_file = cert.cert })
    local list = {}
    for i = 1, 100 do list[i] = i end
    local res = async.map(function()
      local r = c:get(srv.url .. "/hello.txt")
      return { status = r.status, version = r.http_version, connects = r.num_connects,
               size = #r.body }
    end, list)
    local connects = 0
    for i = 1, 100 do
      assert.equal(200, res[i].status)
      assert.equal("2", res[i].version)
      assert.equal(900, res[i].size)
      connects = connects + res[i].connects
    end
    assert.equal(1, connects)
  end)
end)
