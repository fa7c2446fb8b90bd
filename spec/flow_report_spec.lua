-- The HTML report of a lasync.flow run, opened in a real browser: Debian's chromium, headless,
-- started (and ended) by each test; the DOM it renders is checked.
local helper = require("spec.helper")
local async = helper.async
local flow = require("lasync.flow")

local CHROMIUM = os.getenv("CHROMIUM") or "/usr/bin/chromium"

-- Renders the page at path in headless chromium; returns the DOM after its script ran.
local function render(path, extra)
  local profile = os.tmpname()
  os.remove(profile)
  local r = helper.sh(table.concat({
    "timeout 60", helper.q(CHROMIUM), "--headless --no-sandbox --disable-gpu --disable-quic",
    "--no-first-run --disable-background-networking --disable-component-update --disable-sync",
    "--user-data-dir=" .. helper.q(profile), "--virtual-time-budget=10000",
    "--window-size=1300,1000", extra or "--dump-dom", helper.q("file://" .. path),
  }, " "))
  os.execute("rm -rf " .. helper.q(profile))
  return r
end

local tmpfile = helper.tmpfile

-- The DOM of the report at path once its script finished (the file is removed)
local function rendered_dom(path)
  local r = render(path)
  os.remove(path)
  assert.equal(0, r.code, r.stderr)
  assert.is_truthy(r.stdout:find('data-ready="1"', 1, true), "the page's script did not finish")
  return r.stdout
end

-- A run with nested calls, a retried call, a failure and a label.
local function sample_run(path)
  local n = 0
  local fetch = flow.node("fetch", function(url)
    async.sleep(0.002)
    if url == "http://example/missing" then
      error(async.new_error("http", "HTTP 404 from " .. url, { status = 404 }))
    end
    n = n + 1
    if n == 1 then error(async.new_error("network", "connection reset by peer")) end
    return "<html>" .. url .. "</html>"
  end, { retries = 2, backoff = 0.001, name_of = function(url) return url end })
  local summarise = flow.node("summarise", function(page)
    flow.metric("tokens", #page)
    return page:upper()
  end)
  local pipeline = flow.node("pipeline", function(urls)
    local pages = flow.map(fetch, urls, { return_errors = true })
    local out = {}
    for i = 1, pages.n do
      if type(pages[i]) == "string" then out[#out + 1] = summarise(pages[i]) end
    end
    return #out
  end)
  local run <close> = flow.session{ name = "report-test", report = path }
  pipeline({ "http://example/a", "http://example/b", "http://example/missing" })
  return run
end

describe("the flow report in a browser", function()
  helper.it("shows the calls, the tree, the failure with its message, and the summary", function()
    local path = tmpfile(".html")
    sample_run(path)
    local page = helper.readfile(path)
    -- self-contained: no network, no external script, style or font
    assert.is_falsy(page:find("<script src", 1, true))
    assert.is_falsy(page:find("<link", 1, true))
    assert.is_falsy(page:find("https?://[%w.]+/[%w/]*%.js"))
    assert.is_falsy(page:find("@import", 1, true))
    local dom = rendered_dom(path)
    assert.matches("lasync flow: report%-test", dom)
    -- the call tree: every call has a row (the run is small), nested under its parent
    local rows = 0
    for _ in dom:gmatch('class="row[^"]*" data%-i="') do rows = rows + 1 end
    assert.equal(1 + 3 + 2, rows)
    assert.matches("<b>pipeline</b>", dom)
    assert.matches("<b>fetch</b>", dom)
    assert.matches("<b>summarise</b>", dom)
    assert.matches("http://example/missing", dom)
    assert.matches("2 attempts", dom)  -- the retried fetch
    -- the failure, with its message, in the list and in the selected call's details
    assert.matches("Failures %(1%)", dom)
    assert.matches("HTTP 404 from http://example/missing", dom)
    assert.matches("<h2>Traceback</h2>", dom)
    -- the summary table: calls by node, and the metric
    assert.matches("<th>tokens</th>", dom)
    assert.matches("<td>fetch</td><td>3</td><td>2</td><td>1</td><td>1</td>", dom)
  end)

  helper.it("a report of 100,000 calls opens (aggregated timeline, virtualised tree) #slow", function()
    local path = tmpfile(".html")
    local node = flow.node("bulk", function(i)
      if i % 1000 == 0 then error("failure " .. i) end
      return i
    end, { capture = false })
    do
      local _ <close> = flow.session{ name = "bulk", report = path }
      for i = 1, 100000 do pcall(node, i) end
    end
    local dom = rendered_dom(path)
    assert.matches("<b>100000</b> calls", dom)
    assert.matches("Failures %(100%)", dom)
    local rows = 0
    for _ in dom:gmatch('class="row[^"]*" data%-i="') do rows = rows + 1 end
    assert.is_true(rows > 10 and rows < 200, rows .. " rows in the DOM")
  end)
end)
